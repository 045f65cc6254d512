"""NVFlare POC mode: deploy/run_poc.sh prepares and starts POC, allow-lists the installed package, submits the
FedBip recipe as the POC admin (sites log what they receive) and stops POC. POC writes under ~ and uses ports
8002/8003: HOME is isolated."""

import os
import subprocess
import sys

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
