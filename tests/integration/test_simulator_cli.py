"""The README's `nvflare simulator` path on an exported job folder, and the Client API mode in SimEnv."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def _run(cmd, cwd, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _results(workspace):
    with open(os.path.join(workspace, "server", "simulate_job", "fedbip", "results.json")) as f:
        return json.load(f)


def _export_tiny_job(export_dir, num_clients: int, examples: int) -> str:
    """Exports the main job, shrunk, the way a user does; returns the job folder for `nvflare simulator`."""
    sizes = ["--num-rounds", "1", "--max-examples", str(examples), "--test-examples", str(examples)]
    _run(
        [sys.executable, "jobs/fedbip_text/job.py", "--export", "--export-dir", str(export_dir)]
        + ["--num-clients", str(num_clients), "--max-length", "32"]
        + sizes,
        cwd=REPO,
    )
    return str(export_dir / "fedbip_text")


def test_exported_job_runs_with_nvflare_simulator(tmp_path, minilm_path):
    job_folder = _export_tiny_job(tmp_path / "export", num_clients=2, examples=16)
    workspace = str(tmp_path / "ws")
    _run([os.path.join(BIN, "fedbip"), "allow-list", workspace], cwd=REPO)
    _run(
        [os.path.join(BIN, "nvflare"), "simulator", job_folder, "-w", workspace, "-n", "2", "-t", "2"],
        cwd=str(tmp_path),
    )
    results = _results(workspace)
    assert sorted(results["clients"]) == ["site-1", "site-2"]
    for info in results["clients"].values():
        assert 0.0 <= info["accuracy"] <= 1.0 and os.path.isdir(info["adapter_dir"])


def test_without_allow_list_the_simulator_refuses_our_components(tmp_path, minilm_path):
    job_folder = _export_tiny_job(tmp_path / "export", num_clients=1, examples=8)
    workspace = str(tmp_path / "ws")
    proc = subprocess.run(
        [os.path.join(BIN, "nvflare"), "simulator", job_folder, "-w", workspace, "-n", "1", "-t", "1"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "not in allow_list" in proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(workspace, "server", "simulate_job", "fedbip", "results.json"))


def test_client_api_mode_runs_in_simenv(tmp_path, minilm_path):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe

    recipe = FedBipRecipe(
        name="fedbip_api",
        num_rounds=1,
        min_clients=2,
        client_mode="client_api",
        max_length=32,
        num_threads=1,
        data={"suite": "text-tasks", "n_train": 16, "n_test": 16, "seed": 0},
    )
    recipe.execute(SimEnv(num_clients=2, num_threads=2, workspace_root=str(tmp_path)))
    results = _results(os.path.join(str(tmp_path), "fedbip_api"))
    assert sorted(results["clients"]) == ["site-1", "site-2"]
    for info in results["clients"].values():
        assert info["n_train"] == 16 and 0.0 <= info["accuracy"] <= 1.0
        assert "accuracy_before" in info
        assert os.path.exists(os.path.join(info["adapter_dir"], "adapter_config.json"))
