"""FedBipRecipe: argument validation, export layout, per-site configuration, allow-listing."""

import json
import os

import pytest

from fedbip_nvflare.recipes import FedBipRecipe, allow_fedbip_components


def _export(recipe, tmp_path):
    recipe.export(str(tmp_path))
    job_dir = os.path.join(str(tmp_path), recipe.name)
    configs = {}
    for root, _, files in os.walk(job_dir):
        for f in files:
            if f.endswith(".json"):
                with open(os.path.join(root, f)) as fh:
                    configs[os.path.relpath(os.path.join(root, f), job_dir)] = json.load(fh)
    return job_dir, configs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"negative": "abs"}, "negative must be one of"),
        ({"similarity_on": "both"}, "similarity_on must be one of"),
        ({"num_rounds": 0}, "num_rounds"),
        ({"min_clients": 0}, "min_clients"),
        ({"client_mode": "grpc"}, "client_mode"),
        ({"launch_external_process": True}, "client_api"),
        ({"lora_r": -1}, "lora r"),
        ({"target_modules": []}, "target_modules"),
        ({"local_epochs": 0}, "local_epochs"),
        ({"train_timeout": -5}, "train_timeout"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FedBipRecipe(**kwargs)


def test_export_uses_installed_package_components(tmp_path):
    recipe = FedBipRecipe(name="fb", num_rounds=2, min_clients=3, layerwise=True, negative="keep")
    job_dir, configs = _export(recipe, tmp_path)
    server = configs["app/config/config_fed_server.json"]
    client = configs["app/config/config_fed_client.json"]
    workflow = server["workflows"][0]
    assert workflow["path"] == "fedbip_nvflare.server.controller.FedBipController"
    rule = workflow["args"]["rule"]
    assert rule["args"]["layerwise"] is True and rule["args"]["negative"] == "keep"
    executor = client["executors"][0]
    assert executor["executor"]["path"] == "fedbip_nvflare.client.executor.FedBipExecutor"
    assert executor["tasks"] == ["train", "validate"]
    assert not os.path.exists(os.path.join(job_dir, "app", "custom")), "installed-package mode ships no code"
    assert configs["meta.json"]["min_clients"] == 3


def test_per_site_config_gives_each_site_its_own_data(tmp_path):
    recipe = FedBipRecipe(
        name="fb_sites",
        per_site_config={
            "site-a": {"data": {"train_path": "/data/a.csv"}},
            "site-b": {"data": {"train_path": "/data/b.jsonl"}, "num_threads": 1},
        },
    )
    _, configs = _export(recipe, tmp_path)
    per_site = {k: v for k, v in configs.items() if k.endswith("config_fed_client.json")}
    data = sorted(c["executors"][0]["executor"]["args"]["data"]["train_path"] for c in per_site.values())
    assert data == ["/data/a.csv", "/data/b.jsonl"]


def test_per_site_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        FedBipRecipe(per_site_config={"site-a": {"learning_rate_typo": 1}})


def test_client_api_mode_ships_the_script(tmp_path):
    recipe = FedBipRecipe(name="fb_api", client_mode="client_api")
    job_dir, configs = _export(recipe, tmp_path)
    shipped = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(job_dir, "app", "custom")) for f in fs]
    assert shipped == [os.path.join(job_dir, "app", "custom", "fedbip_client.py")], "the script travels with the job"
    executor = configs["app/config/config_fed_client.json"]["executors"][0]["executor"]["args"]
    assert executor["task_script_path"] == "fedbip_client.py", "named relative to the app's custom folder"


def test_allow_list_adds_package_and_keeps_existing_entries(tmp_path):
    path = allow_fedbip_components(str(tmp_path))
    with open(path) as f:
        allow = json.load(f)["class_allow_list"]
    assert "fedbip_nvflare." in allow
    assert any(entry.startswith("nvflare.") for entry in allow), "NVFlare's default list is kept"
    allow_fedbip_components(str(tmp_path))
    with open(path) as f:
        assert json.load(f)["class_allow_list"].count("fedbip_nvflare.") == 1


def test_federated_head_shared_or_per_label_space(tmp_path):
    with pytest.raises(ValueError, match="only used with federate_head=True"):
        FedBipRecipe(num_labels=20)
    with pytest.raises(ValueError, match="an int >= 2"):
        FedBipRecipe(federate_head=True, num_labels=1)
    with pytest.raises(ValueError, match="federate_head=True needs num_labels"):
        FedBipRecipe(federate_head=True, aggregation="fedavg")
    per_space = FedBipRecipe(name="fb_heads", federate_head=True)
    _, configs = _export(per_space, tmp_path / "per_space")
    server_args = configs["app/config/config_fed_server.json"]["workflows"][0]["args"]
    assert server_args["federate_head"] is True and server_args.get("num_labels") is None
    recipe = FedBipRecipe(name="fb_head", federate_head=True, num_labels=20)
    _, configs = _export(recipe, tmp_path / "shared")
    server_args = configs["app/config/config_fed_server.json"]["workflows"][0]["args"]
    client_args = configs["app/config/config_fed_client.json"]["executors"][0]["executor"]["args"]
    assert server_args["federate_head"] is True and server_args["num_labels"] == 20
    assert client_args["settings"]["args"]["federate_head"] is True


def test_fedavg_baseline_uses_nvflare_fedavg(tmp_path):
    _, configs = _export(FedBipRecipe(name="fb_avg", aggregation="fedavg", min_clients=2), tmp_path)
    server = configs["app/config/config_fed_server.json"]
    paths = [w["path"] for w in server["workflows"]]
    assert paths == [
        "nvflare.app_common.workflows.fedavg.FedAvg",
        "fedbip_nvflare.server.final_validation.FinalValidation",
    ]
    assert server["components"][0]["path"] == "fedbip_nvflare.server.persistor.AdapterPersistor"
    with pytest.raises(ValueError, match="no aggregation_options"):
        FedBipRecipe(aggregation="fedavg", aggregation_options={"sigma": 1})


def test_fedavg_with_a_server_learning_rate(tmp_path):
    recipe = FedBipRecipe(name="fb_slr", aggregation="fedavg", server_learning_rate=2.0, min_clients=6, num_rounds=4)
    _, configs = _export(recipe, tmp_path)
    workflow = configs["app/config/config_fed_server.json"]["workflows"][0]
    assert workflow["path"] == "fedbip_nvflare.server.fedavg.ServerLrFedAvg"
    # FedAvg's own arguments must survive the export, or the job runs NVFlare's defaults (3 clients, 5 rounds)
    expected = {"server_learning_rate": 2.0, "num_clients": 6, "num_rounds": 4}
    assert {k: workflow["args"].get(k) for k in expected} == expected
    with pytest.raises(ValueError, match="only to aggregation='fedavg'"):
        FedBipRecipe(server_learning_rate=2.0)


def test_centered_similarity_and_round_eval_examples_reach_server_and_sites(tmp_path):
    recipe = FedBipRecipe(name="fb_center", center_similarity=True, round_eval_examples=50, min_clients=2)
    _, configs = _export(recipe, tmp_path)
    server_args = configs["app/config/config_fed_server.json"]["workflows"][0]["args"]
    client_args = configs["app/config/config_fed_client.json"]["executors"][0]["executor"]["args"]
    assert server_args["rule"]["args"]["center_similarity"] is True
    assert client_args["settings"]["args"]["round_eval_examples"] == 50
    with pytest.raises(ValueError, match="round_eval_examples"):
        FedBipRecipe(round_eval_examples=0)


def test_share_lora_a_reaches_the_server_rule_and_only_fedbip_takes_it(tmp_path):
    recipe = FedBipRecipe(name="fb_sa", share_lora_a=True, similarity_on="cumulative", min_clients=2)
    assert recipe.rule.method_name() == "fedbip-cumulative-sa"
    _, configs = _export(recipe, tmp_path)
    server_args = configs["app/config/config_fed_server.json"]["workflows"][0]["args"]
    assert server_args["rule"]["args"]["share_lora_a"] is True
    with pytest.raises(ValueError, match="share_lora_a applies to FedBip's rule only"):
        FedBipRecipe(aggregation="local", share_lora_a=True)


def test_precision_and_streaming_reach_the_exported_components(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        FedBipRecipe(precision="fp8")
    _, configs = _export(FedBipRecipe(name="fb_fast", precision="bf16", streaming=True), tmp_path / "executor")
    assert configs["app/config/config_fed_server.json"]["workflows"][0]["args"]["rule"]["args"]["streaming"] is True
    assert '"precision": "bf16"' in json.dumps(configs["app/config/config_fed_client.json"])
    _, configs = _export(FedBipRecipe(name="fb_api", client_mode="client_api", precision="bf16"), tmp_path / "api")
    assert "--precision bf16" in json.dumps(configs["app/config/config_fed_client.json"])


def test_simenv_with_a_client_count_and_per_site_configs_names_the_sites():
    from nvflare.recipe.sim_env import SimEnv

    recipe = FedBipRecipe(per_site_config={"site-2": {"batch_size": 4}})
    env = SimEnv(num_clients=3, workspace_root="/tmp/unused")
    named = recipe._named_sim_env(env)
    assert named.clients == ["site-1", "site-2", "site-3"] and env.clients is None
    assert recipe.per_site_config == {"site-1": {}, "site-2": {"batch_size": 4}, "site-3": {}}


def test_a_per_site_config_beyond_the_simulated_sites_is_refused():
    from nvflare.recipe.sim_env import SimEnv

    recipe = FedBipRecipe(per_site_config={"site-1": {}, "hospital-a": {}})
    with pytest.raises(ValueError, match=r"per_site_config names \['hospital-a'\], not among the 2 simulated sites"):
        recipe.execute(SimEnv(num_clients=2, workspace_root="/tmp/unused"))


def test_a_suite_of_another_modality_fails_at_construction():
    with pytest.raises(ValueError, match="'vision-domains' is not a text suite"):
        FedBipRecipe(data={"suite": "vision-domains"})


def test_site_state_root_reaches_the_executor_and_the_client_script(tmp_path):
    _, configs = _export(FedBipRecipe(name="fb_state", site_state_root="/srv/fedbip_state"), tmp_path / "executor")
    args = configs["app/config/config_fed_client.json"]["executors"][0]["executor"]["args"]
    assert args["site_state_root"] == "/srv/fedbip_state"
    _, configs = _export(FedBipRecipe(name="fb_default"), tmp_path / "default")
    args = configs["app/config/config_fed_client.json"]["executors"][0]["executor"]["args"]
    assert args.get("site_state_root") is None, "None: the site's workspace decides"
    _, configs = _export(
        FedBipRecipe(name="fb_api", client_mode="client_api", site_state_root="/srv/s"), tmp_path / "a"
    )
    assert "--site-state-root /srv/s" in json.dumps(configs["app/config/config_fed_client.json"])
    with pytest.raises(ValueError, match="site_state_root"):
        FedBipRecipe(site_state_root="")
