"""Failures are loud: jobs exit non-zero with a one-line reason, and a flag combination that cannot work fails
before any simulator starts (issue 24)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_script(args, timeout=300):
    """Runs a repository script with this interpreter (the package importable, offline); returns the process."""
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    "job, flags, message",
    [
        ("fedbip_text", ["--suite", "vision-domains"], "'vision-domains' is not a text suite (it is a vision suite"),
        ("fedbip_vision", ["--suite", "text-tasks"], "'text-tasks' is not a vision suite (it is a text suite"),
        ("fedbip_llm", ["--launch-external-process"], "launch_external_process=True needs client_mode='client_api'"),
        ("fedavg_dropin", ["--suite", "instruct-tasks"], "is not a text suite (it is a causal-lm suite"),
    ],
)
def test_a_flag_combination_that_cannot_work_fails_before_the_simulator(tmp_path, job, flags, message):
    proc = run_script([f"jobs/{job}/job.py", *flags, "--workspace", str(tmp_path)], timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, "one line, no traceback"
    assert not os.listdir(tmp_path), "no simulator workspace was made"


def test_label_skew_job_gets_the_client_count(tmp_path, minilm_path):
    proc = run_script(
        [
            "jobs/fedbip_text/job.py",
            *("--suite", "label-skew", "--num-clients", "2", "--num-rounds", "1", "--max-examples", "8"),
            *("--test-examples", "8", "--max-length", "32", "--torch-threads", "1", "--workspace", str(tmp_path)),
        ]
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "FAILED" not in proc.stdout + proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("site-2 ")], proc.stdout


def test_a_run_with_fewer_results_than_min_clients_fails_naming_the_sites_error(tmp_path, minilm_path):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe
    from fedbip_nvflare.results import execute_and_check, format_table

    missing = str(tmp_path / "no_such_file.csv")
    recipe = FedBipRecipe(
        name="fedbip_loud",
        num_rounds=1,
        min_clients=2,
        data={"suite": "text-tasks", "n_train": 8, "n_test": 8, "seed": 0},
        max_length=32,
        num_threads=1,
        per_site_config={"site-2": {"data": {"train_path": missing}}},
    )
    # SimEnv with a client count and per-site configs: the recipe names the sites (site-1 gets the shared data)
    env = SimEnv(num_clients=2, workspace_root=str(tmp_path))
    results, failure = execute_and_check(recipe, env, str(tmp_path / "fedbip_loud"), 2)
    assert failure is not None and failure.startswith(
        "only 1 of 2 clients produced a result, fewer than min_clients=2 (1 failed; site-2: site set-up failed: "
    )
    assert "no_such_file.csv" in failure and "\n" not in failure
    assert results["clients"]["site-1"]["accuracy"] is not None
    row = [line for line in format_table(results).splitlines() if line.startswith("site-2")]
    assert row and row[0].startswith("site-2     FAILED: site set-up failed: ")
