"""Production-style deployment on localhost: deploy/run_local.sh provisions a TLS project, starts the server and
three sites from their startup kits, submits FedBip as the admin (installed-package mode) and shuts down."""

import json
import os
import socket
import subprocess
import sys

from benchmarks.processes import pids_running_from
from fedbip_nvflare import assets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITES = ["site-1", "site-2", "site-3"]


def _free_ports(n: int):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_provisioned_deployment_runs_fedbip_end_to_end(tmp_path, minilm_path):
    work = tmp_path / "deploy"
    fl_port, admin_port = _free_ports(2)
    env = dict(
        os.environ,
        HOME=str(tmp_path / "home"),  # NVFlare's tools write under ~: keep them out of the real home
        FEDBIP_ASSETS_DIR=assets.assets_dir(),  # the offline model, found without the real home
        FEDBIP_DEPLOY_DIR=str(work),
        FEDBIP_FL_PORT=str(fl_port),
        FEDBIP_ADMIN_PORT=str(admin_port),
        PYTHON=sys.executable,
    )
    os.makedirs(env["HOME"])
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "deploy", "run_local.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    logs = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, logs
    with open(work / "results" / "results.json") as f:
        results = json.load(f)
    assert sorted(results["clients"]) == SITES
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in results["clients"].values())
    for site in SITES:
        assert f"{site} keeps its personalized adapter in" in proc.stdout
    # every process the script started is gone (it stops its own process groups, even on failure)
    leftover = pids_running_from(str(work))
    assert not leftover, f"processes still running from {work}: {leftover}"
