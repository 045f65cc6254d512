"""A tiny real FedBip vision job in NVFlare's simulator: MobileNetV2 + LoRA on the vision-domains suite."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.server.state import ClientStateStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "torchvision/mobilenet_v2"
CLIENTS = ["site-1", "site-4", "site-6"]  # fashion-tops, mnist-0-4, digits-8x8
ROUNDS = 2


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare import assets
    from fedbip_nvflare.recipes import FedBipRecipe

    if assets.model_path(MODEL) is None:
        pytest.fail("offline MobileNetV2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    workspace = str(tmp_path_factory.mktemp("simenv_vision"))
    recipe = FedBipRecipe(
        name="fedbip_vision_it",
        modality="vision",
        model=MODEL,
        num_rounds=ROUNDS,
        min_clients=3,
        data={"suite": "vision-domains", "n_train": 24, "n_test": 24, "seed": 0, "image_size": 32},
        num_threads=1,
        log_updates=True,
    )
    recipe.execute(SimEnv(clients=CLIENTS, num_threads=3, workspace_root=workspace))
    return os.path.join(workspace, "fedbip_vision_it")


def _server_dir(run_dir):
    return os.path.join(run_dir, "server", "simulate_job", K.STATE_DIR)


def _clients(run_dir):
    with open(os.path.join(_server_dir(run_dir), K.RESULTS_FILE)) as f:
        results = json.load(f)
    assert results["num_rounds"] == ROUNDS
    return results["clients"]


def test_results_cover_every_client(finished_job):
    clients = _clients(finished_job)
    assert sorted(clients) == sorted(CLIENTS)
    assert {c["task"] for c in clients.values()} == {"fashion-tops", "mnist-0-4", "digits-8x8"}
    for info in clients.values():
        assert 0.0 <= info["accuracy"] <= 1.0 and 0.0 <= info["accuracy_before"] <= 1.0
        assert info["n_train"] == 24


def test_personalized_adapters_differ_and_load_with_peft_onto_the_backbone(finished_job):
    from peft import PeftModel, get_peft_model_state_dict

    from fedbip_nvflare.models.vision import load_vision_backbone

    loaded = {}
    for site, info in _clients(finished_job).items():
        adapter_dir = info["adapter_dir"]
        with open(os.path.join(adapter_dir, "labels.json")) as f:
            labels = json.load(f)
        assert labels["base_model"] == MODEL and labels["image_size"] == 32
        head = load_file(os.path.join(adapter_dir, "head.safetensors"))
        assert head["head.weight"].shape == (len(labels["label_names"]), 1280)
        model = PeftModel.from_pretrained(load_vision_backbone(MODEL)[0], adapter_dir)
        loaded[site] = get_peft_model_state_dict(model)
    for a, b in [(CLIENTS[0], CLIENTS[1]), (CLIENTS[0], CLIENTS[2]), (CLIENTS[1], CLIENTS[2])]:
        diff = max(float((loaded[a][n] - loaded[b][n]).abs().max()) for n in loaded[a])
        assert diff > 1e-6, f"{a} and {b} got identical personalized adapters"

    state_round, _, thetas, _ = ClientStateStore(os.path.join(_server_dir(finished_job), "state")).load()
    assert state_round == ROUNDS - 1
    for site in CLIENTS:
        assert set(thetas[site]) == set(loaded[site])
        for name, tensor in thetas[site].items():
            torch.testing.assert_close(loaded[site][name].float(), tensor, rtol=0, atol=1e-7)


def test_rounds_log_has_weights_per_round(finished_job):
    with open(os.path.join(_server_dir(finished_job), K.ROUNDS_FILE)) as f:
        rounds = [json.loads(line) for line in f]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    for r in rounds:
        assert sorted(r["clients"]) == sorted(CLIENTS) and not r["rejected"] and not r["missing"]
        assert torch.allclose(torch.tensor(r["weights"]).sum(dim=1), torch.ones(3), atol=1e-6)


def test_private_head_never_leaves_the_site(finished_job):
    server = _server_dir(finished_job)
    paths = glob.glob(os.path.join(server, "**", "*.safetensors"), recursive=True)
    assert paths
    for path in paths:
        assert not any(name.startswith("head.") for name in load_file(path)), f"{path} holds a head tensor"


def test_committed_job_folder_is_what_the_job_exports(tmp_path):
    proc = subprocess.run(
        [sys.executable, "jobs/fedbip_vision/job.py", "--export", "--export-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    committed = os.path.join(REPO, "jobs", "fedbip_vision", "job_folder")
    files = sorted(
        os.path.relpath(p, committed) for p in glob.glob(os.path.join(committed, "**", "*.json"), recursive=True)
    )
    assert len(files) == 3
    for rel in files:
        with open(os.path.join(committed, rel)) as a, open(os.path.join(str(tmp_path), rel)) as b:
            assert json.load(a) == json.load(b), f"{rel}: re-export jobs/fedbip_vision/job_folder"
    with open(os.path.join(committed, "fedbip_vision", "app", "config", "config_fed_client.json")) as f:
        args = json.load(f)["executors"][0]["executor"]["args"]
    assert args["modality"] == "vision" and args["model"] == MODEL
