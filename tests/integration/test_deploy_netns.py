"""FedBip across hosts on one machine: deploy/run_netns.sh runs a provisioned TLS project's server, three sites and
the admin in Linux network namespaces it creates and removes, each host with its own workspace and package copy; the
admin uses `nvflare job submit`. Then the faults on that deployment: a site's host crashes mid-round and comes back,
and the server's host crashes mid-job and the job resumes from the server's saved state.

Needs root and iproute2; where either is missing, or namespaces cannot be created, the tests skip and say which.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from typing import Dict, List, Optional

import pytest
import torch

from benchmarks.processes import pids_running_from
from fedbip_nvflare import assets
from fedbip_nvflare.client.audit import SENT_FILE, received_log
from fedbip_nvflare.core import params_digest
from fedbip_nvflare.server.state import ClientStateStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "deploy", "run_netns.sh")
SITES = ["site-1", "site-2", "site-3"]
SERVER = "fedbip-server"
SUBNET = "10.231.0"


def netns_missing() -> Optional[str]:
    """What this machine lacks to run the namespace deployment, or None."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN; running as uid {os.geteuid()})")
    if shutil.which("ip") is None:
        missing.append("the ip command (iproute2)")
    if missing:
        return "; ".join(missing)
    probe = f"fbprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"permission to create network namespaces (`ip netns add` failed: {made.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def netns_available():
    missing = netns_missing()
    if missing:
        pytest.skip(f"deploy/run_netns.sh needs {missing}")


class Deployment:
    """One run of deploy/run_netns.sh and the files it left.

    Args:
        work: The run's work folder.
        prefix: Its namespace name prefix.
        proc: The finished script.
    """

    def __init__(self, work: str, prefix: str, proc: subprocess.CompletedProcess):
        self.work = work
        self.prefix = prefix
        self.proc = proc
        self.out = proc.stdout

    def events(self) -> Dict[str, str]:
        """``{event: job id}`` the script recorded (site-crash, site-rejoin, uninterrupted, server-crash, resumed)."""
        with open(os.path.join(self.work, "events.txt")) as f:
            return dict(line.split() for line in f if line.strip())

    def server_run(self, name: str) -> str:
        """The server's run folder of job ``name`` in the admin's download."""
        (found,) = glob.glob(os.path.join(self.work, "results", name, "download", "*", "workspace"))
        return found

    def site_run(self, site: str, job_id: str) -> str:
        return os.path.join(self.work, "kits", site, job_id)

    def results(self, name: str) -> dict:
        with open(os.path.join(self.server_run(name), "fedbip", "results.json")) as f:
            return json.load(f)

    def rounds(self, name: str) -> Dict[int, dict]:
        with open(os.path.join(self.server_run(name), "fedbip", "rounds.jsonl")) as f:
            return {r["round"]: r for r in map(json.loads, f)}

    def received(self, site: str, job_id: str, file_name: Optional[str] = None) -> Dict[tuple, str]:
        entries = received_log(self.site_run(site, job_id), *([file_name] if file_name else []))
        return {(e["task"], e["round"]): e["digest"] for e in entries}

    def exchange_lines(self) -> List[str]:
        return [line.strip() for line in self.out.splitlines() if re.match(r"\s+round \d+ (train|validate) ", line)]


def run_deployment(tmp_path, *args: str, timeout: float = 900) -> Deployment:
    work = str(tmp_path / "netns")
    prefix = f"fbt{uuid.uuid4().hex[:6]}"
    env = dict(
        os.environ,
        HOME=str(tmp_path / "home"),  # NVFlare's tools write under ~: keep them out of the real home
        FEDBIP_ASSETS_DIR=assets.assets_dir(),
        FEDBIP_DEPLOY_DIR=work,
        FEDBIP_NETNS_PREFIX=prefix,
        FEDBIP_NETNS_SUBNET=SUBNET,
        PYTHON=sys.executable,
    )
    env.pop("PYTHONPATH", None)  # the hosts must import their own copy of the package, never this checkout
    os.makedirs(env["HOME"])
    proc = subprocess.Popen(
        ["bash", SCRIPT, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap removes its namespaces and what runs in them
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            remove_namespaces(prefix)
        pytest.fail(f"run_netns.sh {' '.join(args)} ran over {timeout} s:\n{out[-6000:]}\n{err[-3000:]}")
    run = Deployment(work, prefix, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert_cleaned_up(run)
    return run


def remove_namespaces(prefix: str) -> None:
    """Last resort after a killed script: every process in, then every, namespace named ``<prefix>-*``."""
    for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        if ns.startswith(prefix + "-"):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def assert_cleaned_up(run: Deployment) -> None:
    """No namespace, /etc/netns entry or process of the run is left (its veths and bridge live in the namespaces)."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert run.prefix not in namespaces, namespaces
    assert not glob.glob(f"/etc/netns/{run.prefix}*")
    leftover = pids_running_from(run.work)
    assert not leftover, f"processes still running from {run.work}: {leftover}"


def assert_ok(run: Deployment) -> None:
    assert run.proc.returncode == 0, run.out[-6000:] + run.proc.stderr[-6000:]


def wall_times(run: Deployment) -> Dict[str, int]:
    with open(os.path.join(run.work, "wall_times.txt")) as f:
        return {stage: int(seconds) for stage, seconds in (line.split() for line in f)}


def site_log(run: Deployment, site: str, job_id: str) -> str:
    with open(os.path.join(run.site_run(site, job_id), "log.txt")) as f:
        return f.read()


def saved_state(server_run: str) -> Dict[str, Dict[str, torch.Tensor]]:
    return ClientStateStore(os.path.join(server_run, "fedbip", "state")).load()[2]


def sent_digest(server_run: str, rnd: int, site: str) -> str:
    from safetensors.torch import load_file

    folder = os.path.join(server_run, "fedbip", "updates", f"round_{rnd:03d}")
    return params_digest(load_file(os.path.join(folder, "sent_" + ClientStateStore.file_name(site))))


@pytest.mark.usefixtures("netns_available")
def test_fedbip_runs_across_namespaces_with_nvflare_job_submit(tmp_path, minilm_path):
    run = run_deployment(tmp_path)
    assert_ok(run)
    # every host imported its own installed copy (installed without byte code: the __pycache__ is the hosts')
    for host in [SERVER, *SITES]:
        assert f"{host} imports {run.work}/pkgs/{host}/fedbip_nvflare/__init__.py" in run.out
    assert glob.glob(f"{run.work}/pkgs/{SERVER}/fedbip_nvflare/server/__pycache__/controller.*.pyc")
    for site in SITES:
        assert glob.glob(f"{run.work}/pkgs/{site}/fedbip_nvflare/client/__pycache__/executor.*.pyc"), site
    # the sites reached the server, by its name, over the namespaces' LAN with TLS
    for k, site in enumerate(SITES, start=1):
        assert re.search(rf"{SUBNET}\.1:8002 <= {SUBNET}\.{10 + k}:\d+ SSL {site}\]", run.out), site
        with open(f"{run.work}/kits/{site}/startup/fed_client.json") as f:
            assert json.load(f)["servers"][0]["service"]["target"] == f"{SERVER}:8002"
    assert re.search(r"admin submitted fedbip_netns: job [0-9a-f-]{36}", run.out)
    with open(f"{run.work}/results/fedbip_netns/results.json") as f:
        results = json.load(f)
    assert sorted(results["clients"]) == SITES
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in results["clients"].values())
    for site in SITES:
        assert f"{site} keeps its personalized adapter in {run.work}/kits/{site}/" in run.out
    # who sent what to whom: 2 rounds down and up, and the final model down, each seen alike at both ends
    lines = run.exchange_lines()
    assert len(lines) == len(SITES) * (2 * 2 + 1), lines
    assert all(line.endswith(": same") for line in lines), lines
    assert "audit: each of site-1, site-2, site-3 received only its own models (2 rounds + validation)" in run.out
    assert set(wall_times(run)) >= {"hosts-installed", "federation-started", "job-fedbip_netns", "shutdown"}


@pytest.mark.usefixtures("netns_available")
def test_a_crashed_site_is_left_out_of_the_round_and_rejoins(tmp_path, minilm_path):
    run = run_deployment(tmp_path, "--fault", "site-restart")
    assert_ok(run)
    events = run.events()
    crashed, rejoined = events["site-crash"], events["site-rejoin"]
    assert "site-2 crashed (every process of its host killed) after it received its round-1 task" in run.out
    assert "site-2 registered with the server again" in run.out
    # the crashed job: round 1 aggregated without site-2; site-2 has no final result; NVFlare calls it abnormal
    assert f"job fedbip_site_crash ({crashed}): FINISHED:ABNORMAL" in run.out
    rounds = run.rounds("fedbip_site_crash")
    assert rounds[0]["clients"] == SITES and rounds[0]["missing"] == []
    assert rounds[1]["clients"] == ["site-1", "site-3"] and rounds[1]["missing"] == ["site-2"]
    results = run.results("fedbip_site_crash")["clients"]
    assert "error" in results["site-2"] and "accuracy" not in results["site-2"]
    assert all("accuracy" in results[s] for s in ("site-1", "site-3"))
    # site-2 kept its θ̄ while it was down, and the next job sent it exactly that
    got_before = run.received("site-2", crashed)
    assert sorted(got_before) == [("train", 0), ("train", 1)]  # nothing after the crash
    assert ("train", 1) not in run.received("site-2", crashed, SENT_FILE)  # its round-1 update never left
    kept = params_digest(saved_state(run.server_run("fedbip_site_crash"))["site-2"])
    assert got_before[("train", 1)] == kept
    assert (
        run.received("site-2", rejoined)[("train", 2)]
        == kept
        == sent_digest(run.server_run("fedbip_rejoin"), 2, "site-2")
    )
    # it rejoined: round 2 of the continuation aggregated all three, and site-2 validated its personalized model
    assert run.rounds("fedbip_rejoin")[2]["clients"] == SITES
    assert "accuracy" in run.results("fedbip_rejoin")["clients"]["site-2"]
    assert "audit: each of site-1, site-3 received only its own models (2 rounds + validation)" in run.out
    assert "audit: each of site-1, site-2, site-3 received only its own models (rounds 2-2 + validation)" in run.out
    assert sum(line.endswith(": no record") for line in run.exchange_lines()) == 3  # site-2's lost round 1 and final


@pytest.mark.usefixtures("netns_available")
def test_a_crashed_server_resumes_the_job_from_its_saved_state(tmp_path, minilm_path):
    run = run_deployment(tmp_path, "--fault", "server-resume")
    assert_ok(run)
    events = run.events()
    crashed = events["server-crash"]
    assert "server crashed (every process of its host killed) after it saved round 0, in round 1" in run.out
    assert "the restarted server lists the crashed job as RUNNING" in run.out  # NVFlare 2.9 does not mark it
    resumed_run, plain_run = run.server_run("resumed"), run.server_run("uninterrupted")
    state_dir = f"{run.work}/kits/{SERVER}/{crashed}/fedbip/state"
    with open(os.path.join(resumed_run, "log.txt")) as f:
        assert f"resumed from {state_dir} after round 0" in f.read()
    assert sorted(run.rounds("resumed")) == [1] and run.rounds("resumed")[1]["clients"] == SITES
    # θ̄_i after round 0: the uninterrupted run's, the crashed server's saved state and what the resumed job sent
    persisted = ClientStateStore(state_dir).load()[2]
    for site in SITES:
        assert params_digest(persisted[site]) == sent_digest(plain_run, 1, site), site
        assert sent_digest(resumed_run, 1, site) == sent_digest(plain_run, 1, site), site
    results = run.results("resumed")["clients"]
    assert all("accuracy" in results[s] for s in SITES)
    # the final models equal the uninterrupted run's only if the sites restore their private heads on resume
    # (a resumed job has new site run folders: without that, heads start again from their seed in round 1)
    restored = all("loaded its private head" in site_log(run, s, events["resumed"]) for s in SITES)
    final, plain = saved_state(resumed_run), saved_state(plain_run)
    if restored:
        for site in SITES:
            assert params_digest(final[site]) == params_digest(plain[site]), site
    print(
        "final θ̄_i of the resumed job vs the uninterrupted run (max |difference|): "
        + ", ".join(f"{s} {max((final[s][n] - plain[s][n]).abs().max().item() for n in plain[s]):.3g}" for s in SITES)
        + ("" if restored else "; the sites' private heads were not restored")
    )
    assert "audit: each of site-1, site-2, site-3 received only its own models (rounds 1-1 + validation)" in run.out


def test_the_skip_reason_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    reason = netns_missing()
    assert reason.startswith("root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN; running as uid 1000)")
    assert reason.endswith("; the ip command (iproute2)")


def _netns_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "deploy", "netns_cli.py"), *args], capture_output=True, text=True
    )


def test_netns_cli_reads_what_nvflare_cli_prints_as_json():
    submitted = (
        'Using job folder: jobs/x\n{"schema_version": "1", "status": "ok", "exit_code": 0, "data": {"job_id": "j-1"}}'
    )
    assert _netns_cli("job-id", submitted).stdout.strip() == "j-1"
    meta = json.dumps({"status": "ok", "data": {"job_id": "j-1", "status": "FINISHED:COMPLETED"}})
    assert _netns_cli("status", meta).stdout.strip() == "FINISHED:COMPLETED"
    status = json.dumps({"status": "ok", "data": {"clients": [{"client_name": "site-1"}, {"client_name": "site-2"}]}})
    assert _netns_cli("connected", status, "site-1", "site-2").returncode == 0
    assert _netns_cli("connected", status, "site-1", "site-3").returncode == 1
    failed = _netns_cli("job-id", json.dumps({"status": "error", "message": "no clients available"}))
    assert failed.returncode == 1 and "no clients available" in failed.stderr
