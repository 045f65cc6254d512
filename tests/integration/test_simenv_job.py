"""A tiny real FedBip job in NVFlare's simulator (SimEnv) with the real all-MiniLM-L6-v2."""

import glob
import json
import os

import pytest
import torch
from received_models import assert_each_site_received_only_its_own
from safetensors.torch import load_file
from tensorboard_tags import scalar_tags

from fedbip_nvflare.client.audit import ReceivedModelLog
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import fedbip_aggregate, task_vector
from fedbip_nvflare.server.state import ClientStateStore

CLIENTS = ["site-1", "site-2", "site-3"]
ROUNDS = 2


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, minilm_path):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe

    workspace = str(tmp_path_factory.mktemp("simenv"))
    recipe = FedBipRecipe(
        name="fedbip_it",
        model="sentence-transformers/all-MiniLM-L6-v2",
        num_rounds=ROUNDS,
        min_clients=3,
        data={"suite": "text-tasks", "n_train": 32, "n_test": 32, "seed": 0},
        max_length=48,
        num_threads=1,
        log_updates=True,
        tracking="tensorboard",
    )
    recipe.add_client_input_filter(ReceivedModelLog(), tasks=[K.TRAIN_TASK, K.VALIDATE_TASK])
    recipe.execute(SimEnv(num_clients=3, num_threads=3, workspace_root=workspace))
    return os.path.join(workspace, "fedbip_it")


def _server_dir(run_dir):
    return os.path.join(run_dir, "server", "simulate_job", K.STATE_DIR)


def test_results_cover_every_client(finished_job):
    with open(os.path.join(_server_dir(finished_job), K.RESULTS_FILE)) as f:
        results = json.load(f)
    assert results["method"] == "fedbip" and results["num_rounds"] == ROUNDS
    assert sorted(results["clients"]) == CLIENTS
    tasks = {c["task"] for c in results["clients"].values()}
    assert len(tasks) == 3, "each client holds a different task"
    for info in results["clients"].values():
        assert 0.0 <= info["accuracy"] <= 1.0
        assert 0.0 <= info["accuracy_before"] <= 1.0
        assert info["n_train"] == 32
        assert os.path.isdir(info["adapter_dir"])


def test_personalized_adapters_differ_and_load_with_peft(finished_job, minilm_path):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModel

    with open(os.path.join(_server_dir(finished_job), K.RESULTS_FILE)) as f:
        clients = json.load(f)["clients"]
    loaded = {}
    for site, info in clients.items():
        adapter_dir = info["adapter_dir"]
        assert os.path.exists(os.path.join(adapter_dir, "adapter_config.json"))
        head = load_file(os.path.join(adapter_dir, "head.safetensors"))
        assert set(head) == {"head.weight", "head.bias"}
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_path), adapter_dir)
        loaded[site] = get_peft_model_state_dict(model)
    for a, b in [("site-1", "site-2"), ("site-1", "site-3"), ("site-2", "site-3")]:
        diff = max(float((loaded[a][n] - loaded[b][n]).abs().max()) for n in loaded[a])
        assert diff > 1e-6, f"{a} and {b} got identical personalized adapters"

    state_round, _, thetas, _ = ClientStateStore(os.path.join(_server_dir(finished_job), "state")).load()
    assert state_round == ROUNDS - 1
    for site in CLIENTS:
        for name, tensor in thetas[site].items():
            torch.testing.assert_close(loaded[site][name].float(), tensor, rtol=0, atol=1e-7)


def test_server_state_matches_core_math_on_logged_updates(finished_job):
    server = _server_dir(finished_job)
    _, theta0, final, _ = ClientStateStore(os.path.join(server, "state")).load()
    expected = {}
    for rnd in range(ROUNDS):
        folder = os.path.join(server, "updates", f"round_{rnd:03d}")
        sent = {c: load_file(os.path.join(folder, "sent_" + ClientStateStore.file_name(c))) for c in CLIENTS}
        returned = {c: load_file(os.path.join(folder, "returned_" + ClientStateStore.file_name(c))) for c in CLIENTS}
        if rnd == 0:
            for c in CLIENTS:
                for n in theta0:
                    assert torch.equal(sent[c][n], theta0[n]), "round 0 must start every client from θ̄⁰"
        else:
            for c in CLIENTS:
                for n in theta0:
                    torch.testing.assert_close(sent[c][n], expected[c][n], rtol=0, atol=1e-7)
        result = fedbip_aggregate({c: task_vector(returned[c], sent[c]) for c in CLIENTS})
        assert torch.allclose(result.weights.sum(dim=1), torch.ones(3))
        expected = {c: {n: sent[c][n] + result.updates[c][n] for n in theta0} for c in CLIENTS}
    for c in CLIENTS:
        for n in theta0:
            torch.testing.assert_close(final[c][n], expected[c][n], rtol=0, atol=1e-7)


def test_rounds_log_has_weights_per_round(finished_job):
    with open(os.path.join(_server_dir(finished_job), K.ROUNDS_FILE)) as f:
        rounds = [json.loads(line) for line in f]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    for r in rounds:
        assert r["clients"] == CLIENTS and not r["rejected"] and not r["missing"]
        weights = torch.tensor(r["weights"])
        assert torch.allclose(weights.sum(dim=1), torch.ones(3), atol=1e-6)


def test_private_head_never_leaves_the_site(finished_job):
    server = _server_dir(finished_job)
    for path in glob.glob(os.path.join(server, "**", "*.safetensors"), recursive=True):
        assert not any(name.startswith("head.") for name in load_file(path)), f"{path} holds a head tensor"


def test_a_failing_site_does_not_stop_the_others(tmp_path, minilm_path):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe

    good = {"suite": "text-tasks", "n_train": 16, "n_test": 16, "seed": 0}
    recipe = FedBipRecipe(
        name="fedbip_fault",
        num_rounds=1,
        min_clients=2,
        max_length=32,
        num_threads=1,
        per_site_config={
            "site-1": {"data": good},
            "site-2": {"data": good},
            "site-3": {"data": {"train_path": str(tmp_path / "no_such_file.csv")}},
        },
    )
    recipe.execute(SimEnv(clients=["site-1", "site-2", "site-3"], num_threads=3, workspace_root=str(tmp_path)))
    server = _server_dir(os.path.join(str(tmp_path), "fedbip_fault"))
    with open(os.path.join(server, K.ROUNDS_FILE)) as f:
        (round0,) = [json.loads(line) for line in f]
    assert round0["clients"] == ["site-1", "site-2"] and round0["missing"] == ["site-3"]
    with open(os.path.join(server, K.RESULTS_FILE)) as f:
        clients = json.load(f)["clients"]
    assert "accuracy" in clients["site-1"] and "accuracy" in clients["site-2"]
    assert "accuracy" not in clients["site-3"], "the failed site has no result, and the job still finished"


def test_tensorboard_has_every_sites_metrics_and_the_servers_matrices(finished_job):
    tb = os.path.join(finished_job, "server", "simulate_job", "tb_events")
    tags = scalar_tags(tb)
    for site in CLIENTS:
        assert f"{site}:{K.ACCURACY_RECEIVED}" in tags and f"{site}:train_loss" in tags, sorted(tags)[:20]
        # the server's similarity and weight rows of each site: one line per contributing client
        for name in ("similarity", "weights"):
            assert sum(t.endswith(f":{name}/{site}") for t in tags) == len(CLIENTS), sorted(tags)


def test_report_prints_the_table_and_writes_the_plots(finished_job, tmp_path, capsys):
    from fedbip_nvflare.cli import main

    assert main(["report", finished_job, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for site in CLIENTS:
        assert site in out
    assert "mean" in out
    for name in ("fedbip_accuracy_by_round.png", "fedbip_similarity.png", "fedbip_weights.png"):
        path = os.path.join(str(tmp_path), name)
        assert os.path.getsize(path) > 5_000, name
    assert main(["report", str(tmp_path / "nothing-here")]) == 1


def test_every_model_a_site_received_was_its_own(finished_job):
    server = os.path.join(finished_job, "server", "simulate_job")
    sites = {site: os.path.join(finished_job, site, "simulate_job") for site in CLIENTS}
    assert_each_site_received_only_its_own(server, sites, ROUNDS)
