"""NVFlare POC mode, two ways. deploy/run_poc.sh prepares and starts POC, allow-lists the installed package, submits
the FedBip recipe as the POC admin (sites log what they receive) and stops POC. ``recipe.execute(fedbip_poc_env())``
does the same through NVFlare's Recipe API ``PocEnv``, whose provisioning allow-lists the package. POC writes under ~
and uses ports 8002/8003: HOME is isolated."""

import importlib.util
import os
import subprocess
import sys
import time

from benchmarks.processes import pids_running_from
from fedbip_nvflare import assets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_poc_runs_fedbip_as_the_poc_admin(tmp_path, minilm_path):
    poc = tmp_path / "poc"
    env = dict(
        os.environ,
        HOME=str(tmp_path / "home"),
        FEDBIP_ASSETS_DIR=assets.assets_dir(),
        NVFLARE_POC_WORKSPACE=str(poc),
        PYTHON=sys.executable,
    )
    os.makedirs(env["HOME"])
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "deploy", "run_poc.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for site in ("site-1", "site-2"):
        assert f"{site} keeps its personalized adapter in {poc}" in proc.stdout
    # privacy: fingerprints of every model each site received, against what the server sent it
    assert "audit: each of site-1, site-2 received only its own models (2 rounds + validation)" in proc.stdout
    assert os.path.exists(tmp_path / "results" / "results.json")
    leftover = pids_running_from(str(poc))
    assert not leftover, f"POC processes still running: {leftover}"


def _deploy_submit():
    """deploy/submit.py (not a package module): the POC job's recipe and its checks (results, adapters, audit)."""
    spec = importlib.util.spec_from_file_location("fedbip_deploy_submit", os.path.join(REPO, "deploy", "submit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gone(folder: str, wait_s: float = 60) -> list:
    """The processes still running from ``folder`` after up to ``wait_s`` seconds (killed, by PID, if any)."""
    deadline = time.time() + wait_s
    while pids_running_from(folder) and time.time() < deadline:
        time.sleep(1)
    leftover = pids_running_from(folder)
    for pid in leftover:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return leftover


def test_poc_env_runs_fedbip_from_the_installed_package(tmp_path, minilm_path, monkeypatch, capsys):
    from fedbip_nvflare.recipes import fedbip_poc_env

    poc = tmp_path / "poc"
    kits = poc / "example_project" / "prod_00"
    monkeypatch.setenv("FEDBIP_ASSETS_DIR", assets.assets_dir())  # the offline model, found without the real home
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NVFLARE_POC_WORKSPACE", str(poc))
    os.makedirs(tmp_path / "home")
    submit = _deploy_submit()
    # the job deploy/run_poc.sh submits, small; the sites log what they receive and send (--audit)
    args = submit.parse_args(
        ["--admin-kit", str(kits / "admin@nvidia.com"), "--name", "fedbip_pocenv", "--num-clients", "2"]
        + ["--max-examples", "16", "--test-examples", "16", "--output", str(tmp_path / "results"), "--audit"]
        + ["--site-kits", str(kits), "--sites", "site-1", "site-2"]
    )
    env = fedbip_poc_env(num_clients=2)
    try:
        run = submit.build_recipe(args).execute(env)
        # get_result stops POC; clean_up=False keeps the workspace, where the sites keep their adapters
        result = run.get_result(timeout=900, clean_up=False)
        ok = submit.check_job(args, run.get_job_id(), run.get_status(), result)
    finally:
        env.stop()  # a no-op once get_result stopped POC
        leftover = _gone(str(poc))
    out = capsys.readouterr().out
    assert ok, out[-6000:]
    for site in ("site-1", "site-2"):
        assert f"{site} keeps its personalized adapter in {kits / site}" in out
    assert "audit: each of site-1, site-2 received only its own models (2 rounds + validation)" in out
    assert os.path.exists(tmp_path / "results" / "results.json")
    assert not leftover, f"POC processes still running: {leftover}"
