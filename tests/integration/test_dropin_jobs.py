"""FedBip dropped into stock NVFlare workflows, run for real: FedAvgRecipe in SimEnv (its exported job ships the
Client API script and names no path of this machine) and a ScatterAndGather config job with `nvflare simulator`, and
NVFlare's PyTorch FedAvgRecipe (PTFileModelPersistor, torch tensors both ways) with TensorBoard tracking. Every site
logs a fingerprint of each model it receives; each must be the site's own personalized model. The drop-in path must
give the same per-client models as FedBipController, and with either server the sites snapshot their private state
under the run key the server sends.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from exported_jobs import assert_names_no_local_path, assert_ships_the_script
from received_models import assert_each_site_received_only_its_own, final_models, received, sent_model
from tensorboard_tags import scalar_tags

from fedbip_nvflare.core import params_digest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
SITES = ["site-1", "site-2"]
TINY = {"n_train": 16, "n_test": 16, "seed": 0}


def assert_sites_snapshotted_under_the_run_key(job_root: str, server_run: str, rounds: int) -> None:
    """Every Client API site snapshotted each round under the run key the server keeps in its state
    (``fedbip_state`` in the script's working directory, the site's simulator workspace)."""
    from fedbip_nvflare.client.site_state import SiteSnapshots
    from fedbip_nvflare.constants import FedBipKeys as K
    from fedbip_nvflare.server.state import ClientStateStore

    run_key = ClientStateStore(os.path.join(server_run, "fedbip", "state")).load()[3][K.RUN_KEY]
    for site in SITES:
        snapshots = SiteSnapshots(os.path.join(job_root, site, K.SITE_STATE_DIR), site)
        assert snapshots.rounds(run_key) == list(range(rounds)), site


def _run(cmd, cwd=REPO, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("exchange", ["numpy", "pytorch"])
def test_the_exported_dropin_job_ships_the_script_and_names_no_local_path(tmp_path, exchange):
    from fedbip_nvflare.recipes.fedbip import CLIENT_SCRIPT

    export = str(tmp_path / "export")
    _run([sys.executable, "jobs/fedavg_dropin/job.py", "--export", "--export-dir", export, "--exchange", exchange])
    job = os.path.join(export, "fedavg_dropin")
    machine_paths = {REPO, os.path.realpath(REPO), str(tmp_path), os.path.expanduser("~"), sys.prefix}
    assert_names_no_local_path(job, machine_paths)
    assert_ships_the_script(os.path.join(job, "app"), CLIENT_SCRIPT, external=False)


def test_fedavg_recipe_with_fedbip_dropped_in_equals_the_controller(tmp_path, minilm_path):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe

    rounds = 2
    workspace = tmp_path / "dropin"
    _run(
        [sys.executable, "jobs/fedavg_dropin/job.py", "--num-clients", "2", "--num-rounds", str(rounds)]
        + ["--max-examples", "16", "--test-examples", "16", "--max-length", "32", "--transfer", "DIFF"]
        + ["--audit", "--log-updates", "--workspace", str(workspace)]
    )
    dropin_server = os.path.join(str(workspace), "fedavg_dropin", "server", "simulate_job")
    sites = {s: os.path.join(str(workspace), "fedavg_dropin", s, "simulate_job") for s in SITES}
    assert_each_site_received_only_its_own(dropin_server, sites, rounds)
    with open(os.path.join(dropin_server, "fedbip", "results.json")) as f:
        results = json.load(f)
    assert results["method"] == "fedbip-dropin" and sorted(results["clients"]) == SITES
    assert all(0.0 <= info["accuracy"] <= 1.0 for info in results["clients"].values())
    assert_sites_snapshotted_under_the_run_key(os.path.join(str(workspace), "fedavg_dropin"), dropin_server, rounds)

    recipe = FedBipRecipe(
        name="controller",
        num_rounds=rounds,
        min_clients=2,
        max_length=32,
        num_threads=1,
        client_mode="client_api",
        log_updates=True,
        data={"suite": "text-tasks", **TINY},
    )
    recipe.execute(SimEnv(num_clients=2, workspace_root=str(tmp_path / "controller")))
    controller_server = os.path.join(str(tmp_path / "controller"), "controller", "server", "simulate_job")
    assert_sites_snapshotted_under_the_run_key(
        os.path.join(str(tmp_path / "controller"), "controller"), controller_server, rounds
    )
    for rnd in range(rounds):
        for site in SITES:
            a, b = sent_model(dropin_server, rnd, site), sent_model(controller_server, rnd, site)
            assert set(a) == set(b)
            for name in a:
                assert (a[name] - b[name]).abs().max() < 1e-5, f"round {rnd} {site} {name}"
    final_a, final_b = final_models(dropin_server), final_models(controller_server)
    for site in SITES:
        assert max(float((final_a[site][n] - final_b[site][n]).abs().max()) for n in final_a[site]) < 1e-5
    # and the models really are personalized: the two sites' final adapters differ
    assert any(not (final_a["site-1"][n] == final_a["site-2"][n]).all() for n in final_a["site-1"])


@pytest.fixture()
def tiny_sag_job(tmp_path) -> str:
    """The committed ScatterAndGather config job, shrunk, with each site logging what it receives."""
    job = str(tmp_path / "sag_job")
    shutil.copytree(os.path.join(REPO, "jobs", "fedavg_dropin", "sag_job"), job)
    server_cfg = os.path.join(job, "app", "config", "config_fed_server.json")
    with open(server_cfg) as f:
        server = json.load(f)
    server["num_rounds"] = 2
    with open(server_cfg, "w") as f:
        json.dump(server, f)
    client_cfg = os.path.join(job, "app", "config", "config_fed_client.json")
    with open(client_cfg) as f:
        client = json.load(f)
    args = client["executors"][0]["executor"]["args"]
    args["data"].update(TINY)
    args["settings"]["args"]["max_length"] = 32
    client["task_data_filters"] = [
        {"tasks": ["train", "validate"], "filters": [{"path": "fedbip_nvflare.client.audit.ReceivedModelLog"}]}
    ]
    with open(client_cfg, "w") as f:
        json.dump(client, f)
    return job


def test_scatter_and_gather_config_job_runs_with_nvflare_simulator(tmp_path, tiny_sag_job, minilm_path):
    workspace = str(tmp_path / "ws")
    _run([os.path.join(BIN, "fedbip"), "allow-list", workspace])
    _run([os.path.join(BIN, "nvflare"), "simulator", tiny_sag_job, "-w", workspace, "-n", "2", "-t", "2"])
    server = os.path.join(workspace, "server", "simulate_job")
    with open(os.path.join(server, "fedbip", "rounds.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["round"] for r in records] == [0, 1]
    assert all(r["clients"] == SITES and not r["rejected"] for r in records)
    with open(os.path.join(server, "fedbip", "results.json")) as f:
        results = json.load(f)
    assert sorted(results["clients"]) == SITES
    final = final_models(server)
    for site in SITES:
        entries = received(os.path.join(workspace, site, "simulate_job"))
        assert [(e["task"], e["round"]) for e in entries] == [("train", 0), ("train", 1), ("validate", 2)]
        assert entries[-1]["digest"] == params_digest(final[site])
        other = next(s for s in SITES if s != site)
        assert entries[-1]["digest"] != params_digest(final[other])


def test_pytorch_fedavg_recipe_exchanges_torch_tensors_and_tracks_the_matrices(tmp_path, minilm_path):
    rounds = 2
    workspace = str(tmp_path / "pt")
    _run(
        [sys.executable, "jobs/fedavg_dropin/job.py", "--exchange", "pytorch", "--tracking", "tensorboard"]
        + ["--num-clients", "2", "--num-rounds", str(rounds), "--max-examples", "16", "--test-examples", "16"]
        + ["--max-length", "32", "--audit", "--log-updates", "--workspace", workspace]
    )
    server = os.path.join(workspace, "fedavg_dropin", "server", "simulate_job")
    sites = {s: os.path.join(workspace, "fedavg_dropin", s, "simulate_job") for s in SITES}
    assert_each_site_received_only_its_own(server, sites, rounds)
    for site, run_dir in sites.items():  # the train tasks carried torch tensors (the PyTorch exchange)
        assert [e["format"] for e in received(run_dir) if e["task"] == "train"] == ["torch"] * rounds, site
    with open(os.path.join(server, "fedbip", "rounds.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["round"] for r in records] == list(range(rounds))
    assert all(r["clients"] == SITES and not r["rejected"] for r in records)
    with open(os.path.join(server, "fedbip", "results.json")) as f:
        results = json.load(f)
    assert results["method"] == "fedbip-dropin" and sorted(results["clients"]) == SITES
    assert all(0.0 <= info["accuracy"] <= 1.0 for info in results["clients"].values())
    # NVFlare's PTFileModelPersistor saved the workflow's model: the consensus of the final personalized models
    saved = torch.load(os.path.join(server, "app_server", "FL_global_model.pt"), weights_only=False)["model"]
    final = final_models(server)
    assert set(saved) == set(final["site-1"])
    for name, value in saved.items():
        assert isinstance(value, torch.Tensor)
        mean = torch.stack([final[s][name] for s in SITES]).mean(0)
        assert torch.allclose(value, mean, atol=1e-6), name
    # the server's similarity and weight rows of each site, one line per client, in TensorBoard
    tags = scalar_tags(os.path.join(server, "tb_events"))
    for site in SITES:
        for name in ("similarity", "weights"):
            assert sum(t.endswith(f":{name}/{site}") for t in tags) == len(SITES), sorted(tags)
