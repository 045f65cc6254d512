"""Reliability: faults injected into real FedBip jobs, a server crash and resume, bad state files, config errors.

python -m benchmarks.faults --output benchmarks/results/reliability
python -m benchmarks.faults --output DIR --scenarios faults resume    # a subset; --no-hostile skips the table

Every job is a real NVFlare SimEnv job (all-MiniLM-L6-v2 + LoRA, ``text-tasks``, 16 examples per site, max_length 32,
torch threads 1), run in its own process. Scenarios:

* ``faults``: one 4-site, 4-round job with :class:`fedbip_nvflare.client.faults.FaultInjector` on every site; each
  round different sites fail in different ways (raise, NaN/Inf, wrong shape/dtype, missing/extra tensor, absurd
  norm, timeout, client process crash), so every outcome is separable. ``min_clients=2``, ``norm_bound=2.0``.
* ``resume``: a 3-site, 3-round job is killed (its whole process tree) after round 0 was persisted, while round 1
  is in flight; the same job restarts with ``resume_from`` the persisted state, and every site restores its private
  head and round history from the snapshots it took in the killed job (``site_state_root`` outside both jobs).
* ``state``: restarts from a corrupted and from a truncated state folder.
* ``config``: bad options at construction, a model folder that does not exist and LoRA target modules that match
  nothing (server side), an unknown data key, a missing data file and one site with a different LoRA rank (sites).

Every outcome is checked from the jobs' files and logs (rounds.jsonl, the server state, the fingerprints each site's
``ReceivedModelLog`` recorded, the server and site logs), not only recorded. Writes DIR/faults.json (rows and checks)
and DIR/faults.md (fault → injected how → outcome → data lost → checks), and runs ``benchmarks.hostile`` into the same
folder. Exit status 1 if any check failed. About 7 minutes on 2 cores.
"""

import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.processes import pids_running_from  # noqa: E402
from benchmarks.reporting import command_line, provenance, write_report  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_FILE = "faults.json"
MARKDOWN_FILE = "faults.md"
SCENARIOS = ("faults", "resume", "state", "config")
SITES = ("site-1", "site-2", "site-3", "site-4")
TINY_DATA = {"suite": "text-tasks", "n_train": 16, "n_test": 16, "seed": 0}
TRAIN_TIMEOUT = 45  # generous: round 0 loads the model on every site, on shared cores
VALIDATE_TIMEOUT = 20

# what each rejected data fault's reason says (FedBipController's log line and rounds.jsonl)
REJECT_REASONS = {
    "nan": "non-finite values",
    "inf": "non-finite values",
    "wrong-shape": "has shape",
    "wrong-dtype": "non-floating dtype",
    "missing-tensor": "missing tensors",
    "extra-tensor": "unexpected tensors",
}
# the fault job: {round: {site: kind}}; chosen so that every round's outcomes stay separable
FAULT_PLAN: Dict[int, Dict[str, str]] = {
    0: {"site-2": "raise", "site-3": "nan"},  # 2 valid: aggregated without them
    1: {"site-1": "absurd-norm", "site-2": "wrong-shape"},  # 3 valid: site-1's update clipped by the norm bound
    2: {"site-1": "wrong-dtype", "site-2": "missing-tensor", "site-3": "extra-tensor", "site-4": "inf"},  # 0 valid
    3: {"site-3": "timeout", "site-4": "crash"},  # 2 valid; both faults cost one train_timeout together
}
DATA_LOST = {
    "raise": "the site's training of that round (its update is dropped); its θ̄_i is kept",
    "timeout": "the site's training of that round (its late result is discarded); its θ̄_i is kept",
    "crash": "the site's update of that round and its part of every later task of this job (a crashed simulator "
    "client is not restarted); the server keeps its last θ̄_i",
    "absurd-norm": "nothing: the update is used, scaled down to norm_bound × the round's median norm",
}


# -- jobs ------------------------------------------------------------------------------------------
@dataclass
class JobSpec:
    """One real SimEnv job, as the JSON a job process reads (``--job-spec``).

    Attributes:
        name: Job name (its folder under ``workspace``).
        workspace: SimEnv workspace root.
        sites: Site names.
        rounds: FedBip rounds.
        min_clients: Least valid updates to aggregate a round.
        faults: :class:`FaultInjector` plan (empty: no injector).
        sleep_s: Seconds a ``timeout`` fault sleeps.
        train_timeout: Seconds per train task (0: no limit).
        validate_timeout: Seconds for the validate task (0: no limit).
        norm_bound: The server's norm bound (None: off).
        resume_from: A state folder to resume from.
        site_state_root: Where the sites snapshot their private state (None: in the job's simulator workspace).
        model: Model id or folder.
        target_modules: LoRA target modules.
        data: Data configuration of every site.
        site_data: Per-site data configurations overriding ``data``.
        max_length: Token truncation length.
        privacy: A :mod:`fedbip_nvflare.client.privacy` kind applied to each site's task vector (None: off).
        privacy_options: That filter's options.
        privacy_on_weights: Apply NVFlare's filter of ``privacy`` to the FULL weights instead (no task vector):
            what attaching NVFlare's filter directly does.
    """

    name: str
    workspace: str
    sites: List[str] = field(default_factory=lambda: list(SITES))
    rounds: int = 2
    min_clients: int = 1
    faults: List[Dict[str, Any]] = field(default_factory=list)
    sleep_s: float = 0.0
    train_timeout: int = TRAIN_TIMEOUT
    validate_timeout: int = VALIDATE_TIMEOUT
    norm_bound: Optional[float] = None
    resume_from: Optional[str] = None
    site_state_root: Optional[str] = None
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    target_modules: List[str] = field(default_factory=lambda: ["query", "value"])
    data: Dict[str, Any] = field(default_factory=lambda: dict(TINY_DATA))
    site_data: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    max_length: int = 32
    privacy: Optional[str] = None
    privacy_options: Dict[str, Any] = field(default_factory=dict)
    privacy_on_weights: bool = False

    @property
    def root(self) -> str:
        """The job's folder: ``<workspace>/<name>``."""
        return os.path.join(self.workspace, self.name)


def build_recipe(spec: JobSpec):
    """The FedBipRecipe of a spec, with every site logging what it receives and the fault injector if planned."""
    from fedbip_nvflare.client.audit import ReceivedModelLog
    from fedbip_nvflare.client.faults import FaultInjector
    from fedbip_nvflare.constants import FedBipKeys as K
    from fedbip_nvflare.recipes import FedBipRecipe

    per_site = {s: {"data": spec.site_data.get(s, spec.data)} for s in spec.sites} if spec.site_data else None
    recipe = FedBipRecipe(
        name=spec.name,
        model=spec.model,
        num_rounds=spec.rounds,
        min_clients=spec.min_clients,
        data=spec.data,
        target_modules=spec.target_modules,
        max_length=spec.max_length,
        num_threads=1,
        train_timeout=spec.train_timeout,
        validate_timeout=spec.validate_timeout,
        norm_bound=spec.norm_bound,
        log_updates=True,
        per_site_config=per_site,
        resume_from=spec.resume_from,
        site_state_root=spec.site_state_root,
    )
    if not spec.privacy:  # NVFlare takes one input filter chain per task set; the privacy stash is train-only
        recipe.add_client_input_filter(ReceivedModelLog(), tasks=[K.TRAIN_TASK, K.VALIDATE_TASK])
    if spec.faults:
        recipe.add_client_output_filter(FaultInjector(spec.faults, sleep_s=spec.sleep_s), tasks=[K.TRAIN_TASK])
    if spec.privacy and spec.privacy_on_weights:
        from fedbip_nvflare.client.privacy import build_privacy

        recipe.add_client_output_filter(build_privacy(spec.privacy, spec.privacy_options), tasks=[K.TRAIN_TASK])
    elif spec.privacy:
        from fedbip_nvflare.client.privacy import add_task_vector_privacy

        add_task_vector_privacy(recipe, spec.privacy, spec.privacy_options)
    return recipe


def run_spec(spec: JobSpec) -> int:
    """Runs a spec's job in this process (``--job-spec``); returns 0, or 1 if the simulation failed."""
    from nvflare.recipe.sim_env import SimEnv

    recipe = build_recipe(spec)
    try:
        recipe.execute(SimEnv(clients=list(spec.sites), num_threads=len(spec.sites), workspace_root=spec.workspace))
    except RuntimeError as e:  # SimEnv's "Simulation failed": the logs say why
        print(f"job {spec.name} failed: {e}", flush=True)
        return 1
    return 0


def _kill_tree(proc: subprocess.Popen, folder: str) -> None:
    """Kills a job process's group and every process still running from its workspace (simulator clients)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for _ in range(20):
        left = pids_running_from(folder)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def start_job(spec: JobSpec, log_path: str) -> subprocess.Popen:
    """Starts a spec's job in its own process group; its output goes to ``log_path``."""
    os.makedirs(spec.workspace, exist_ok=True)
    spec_path = os.path.join(spec.workspace, spec.name + ".spec.json")
    with open(spec_path, "w") as f:
        json.dump(asdict(spec), f, indent=2)
    log = open(log_path, "w")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faults", "--job-spec", spec_path],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    return proc


def run_job(spec: JobSpec, timeout: float = 600.0) -> "JobFiles":
    """Runs a spec's job in its own process (killed with its clients after ``timeout``) and reads its files."""
    log_path = os.path.join(spec.workspace, spec.name + ".out.txt")
    proc = start_job(spec, log_path)
    start = time.perf_counter()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc, spec.workspace)
        rc = None
    files = JobFiles(spec.root, spec.sites)
    files.returncode, files.wall_s, files.stdout_path = rc, time.perf_counter() - start, log_path
    return files


class JobFiles:
    """What a finished (or killed) SimEnv job left: server records and state, each site's fingerprints, logs.

    Args:
        root: The job's folder (``<workspace>/<job name>``, or a ``nvflare simulator`` workspace).
        sites: Site names.
    """

    def __init__(self, root: str, sites: Sequence[str]):
        self.root = root
        self.sites = list(sites)
        self.server_dir = os.path.join(root, "server", "simulate_job", "fedbip")
        self.returncode: Optional[int] = None
        self.wall_s = 0.0
        self.stdout_path: Optional[str] = None

    def site_dir(self, site: str) -> str:
        """The site's ``<run dir>/fedbip`` folder."""
        return os.path.join(self.root, site, "simulate_job", "fedbip")

    def rounds(self) -> Dict[int, dict]:
        """``{round: rounds.jsonl record}`` (empty if the server wrote none)."""
        path = os.path.join(self.server_dir, "rounds.jsonl")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return {r["round"]: r for r in map(json.loads, f)}

    def results(self) -> dict:
        """The server's results.json (empty if absent)."""
        path = os.path.join(self.server_dir, "results.json")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def received(self, site: str) -> Dict[tuple, str]:
        """``{(task, round): digest}`` of every model the site received (its ReceivedModelLog)."""
        path = os.path.join(self.site_dir(site), "received.jsonl")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return {(e["task"], e["round"]): e["digest"] for e in map(json.loads, f)}

    def state(self):
        """The server's persisted state ``(round, θ̄⁰, {client: θ̄_i}, extra)`` (checksums verified)."""
        from fedbip_nvflare.server.state import ClientStateStore

        return ClientStateStore(os.path.join(self.server_dir, "state")).load()

    def log(self, who: str = "server") -> str:
        """The text of the server's or a site's log.txt (with the job process's output for the server)."""
        text = ""
        paths = [os.path.join(self.root, who, "log.txt")]
        if who == "server" and self.stdout_path:
            paths.append(self.stdout_path)
        for path in paths:
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text += f.read()
        return text

    def trained(self, site: str) -> bool:
        """Whether the site trained at least once (its history.json exists)."""
        return os.path.exists(os.path.join(self.site_dir(site), "history.json"))


# -- checks and rows ----------------------------------------------------------------------------
class Row:
    """One line of the table: a fault, how it was injected, what happened, what was lost, and the checks."""

    def __init__(self, fault: str, injected: str, outcome: str, data_lost: str):
        self.fault, self.injected, self.outcome, self.data_lost = fault, injected, outcome, data_lost
        self.checks: List[Dict[str, Any]] = []

    def check(self, name: str, passed: bool, detail: Any = "") -> bool:
        """Records one check (never raises)."""
        self.checks.append({"check": name, "passed": bool(passed), "detail": str(detail)[:300]})
        return bool(passed)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "fault": self.fault,
            "injected": self.injected,
            "outcome": self.outcome,
            "data_lost": self.data_lost,
            "checks": self.checks,
        }


def _short(reason: str) -> str:
    """A rejection reason without the tensor's long name."""
    if reason.startswith("tensor "):
        return reason.split(" ", 2)[-1]
    return reason.split(" [")[0] if " [" in reason else reason or "?"


def _has_line(text: str, *parts: str) -> bool:
    """Whether one line of ``text`` holds every part."""
    return any(all(p in line for p in parts) for line in text.splitlines())


def _next_receipt(rnd: int, rounds: int) -> tuple:
    """The key of the next model ``site`` received after round ``rnd``: next round's train task or the validate."""
    return ("train", rnd + 1) if rnd + 1 < rounds else ("validate", rounds)


def check_kept_model(row: Row, files: JobFiles, site: str, rnd: int, rounds: int) -> None:
    """The failed site's θ̄_i after round ``rnd`` is bit-exact what it was sent in that round.

    Compared by fingerprint: the model the site received next (next round or validate), or, if it never received
    another, the server's persisted final θ̄_i.
    """
    from fedbip_nvflare.core import params_digest

    got = files.received(site)
    before = got.get(("train", rnd))
    after = got.get(_next_receipt(rnd, rounds))
    where = "next model it received"
    if after is None:
        after, where = params_digest(files.state()[2][site]), "server's persisted θ̄_i"
    row.check(f"{site}'s θ̄_i unchanged bit-exact after round {rnd} ({where})", before is not None and before == after)


def fault_job_spec(workspace: str) -> JobSpec:
    """The 4-site, 4-round job with :data:`FAULT_PLAN` injected."""
    faults = [{"site": s, "round": r, "kind": k} for r, plan in FAULT_PLAN.items() for s, k in plan.items()]
    return JobSpec(
        name="faults",
        workspace=workspace,
        sites=list(SITES),
        rounds=len(FAULT_PLAN),
        min_clients=2,
        faults=faults,
        sleep_s=TRAIN_TIMEOUT + 5,
        norm_bound=2.0,
    )


def fault_rows(files: JobFiles, spec: JobSpec) -> List[Row]:
    """Checks every fault of :data:`FAULT_PLAN` against what the job left, one row per fault, plus min_clients."""
    rounds, records, results = spec.rounds, files.rounds(), files.results()
    server_log = files.log("server")
    rows = []
    for rnd, plan in FAULT_PLAN.items():
        record = records.get(rnd, {})
        healthy = [s for s in spec.sites if s not in plan]
        for site, kind in plan.items():
            row = Row(kind, f"FaultInjector on {site}'s train result, round {rnd}", "", DATA_LOST.get(kind, ""))
            row.check(f"round {rnd} was recorded", bool(record), sorted(records))
            site_log = files.log(site)
            row.check(f"{site}'s log names the injected fault", f"injected fault: {kind} into {site}" in site_log)
            for other in healthy:  # the others trained and were used
                row.check(f"{other} trained and was aggregated in round {rnd}", other in record.get("clients", []))
            if kind in REJECT_REASONS:
                reason = record.get("rejected", {}).get(site, "")
                row.outcome = f"rejected by the server: {_short(reason)}"
                row.data_lost = "the site's update of that round (rejected); its θ̄_i is kept"
                row.check("rejected with the expected reason", REJECT_REASONS[kind] in reason, reason)
                row.check(
                    "server log names the client and reason",
                    _has_line(server_log, f"round {rnd}: rejected update of {site}: ", REJECT_REASONS[kind]),
                )
            elif kind == "absurd-norm":
                scale = record.get("clipped", {}).get(site)
                row.outcome = f"accepted, clipped by norm_bound=2.0 to scale {scale:.2e}" if scale else "not clipped"
                row.check(f"{site} accepted in round {rnd}", site in record.get("clients", []))
                row.check("its τ was clipped to ≤ 1e-3 of its length", scale is not None and scale < 1e-3, scale)
            else:
                row.check(f"{site} missing from round {rnd}", site in record.get("missing", []), record.get("missing"))
                if kind == "raise":
                    row.outcome = "site answers TASK_RESULT_FILTER_ERROR; server ignores it, round goes on"
                    row.check(
                        "server log names the client and the error code",
                        _has_line(server_log, f"Ignore the result from {site}", "TASK_RESULT_FILTER_ERROR"),
                    )
                elif kind == "timeout":
                    row.outcome = f"train task times out after {spec.train_timeout} s; the late result is discarded"
                    row.check("server log names the client", f"no valid result from ['{site}'" in server_log)
                    row.check(
                        "the train task timed out",
                        "task train exit with status TaskCompletionStatus.TIMEOUT" in server_log,
                    )
                    row.check("its late result was discarded", _has_line(server_log, f"peer={site}", "is not found"))
                elif kind == "crash":
                    row.outcome = "client process exits; its task times out; the job finishes without it"
                    row.check(
                        "server log names the dead client",
                        f"Communication error with client {site}" in server_log
                        or f"Subprocess died for client {site}" in server_log,
                    )
            if kind != "absurd-norm":
                check_kept_model(row, files, site, rnd, rounds)
            if kind == "crash":
                info = results.get("clients", {}).get(site, {})
                row.check(f"{site} has no final validation (it is gone)", "accuracy" not in info, info.keys())
                row.check(
                    f"{site} received nothing after round {rnd}",
                    _next_receipt(rnd, rounds) not in files.received(site),
                )
            else:  # rejoined: it got its next task with its kept model and answered it
                nxt = _next_receipt(rnd, rounds)
                row.check(f"{site} rejoined: received {nxt[0]} {nxt[1]}", nxt in files.received(site))
                if nxt[0] == "train":
                    answered = set(records.get(nxt[1], {}).get("clients", [])) | set(
                        records.get(nxt[1], {}).get("rejected", {})
                    )
                    later_fault = FAULT_PLAN.get(nxt[1], {}).get(site)
                    if later_fault not in ("timeout", "crash", "raise"):
                        row.check(f"{site}'s round-{nxt[1]} result reached the server", site in answered, answered)
                else:
                    accuracy = results.get("clients", {}).get(site, {}).get("accuracy")
                    row.check(f"{site} validated its final model", accuracy is not None, accuracy)
            rows.append(row)
    rows.append(min_clients_row(files, spec, records, server_log))
    return rows


def min_clients_row(files: JobFiles, spec: JobSpec, records: Dict[int, dict], server_log: str) -> Row:
    """The round where fewer than min_clients updates were valid: no aggregation, every θ̄_i kept."""
    rnd = next(r for r, plan in FAULT_PLAN.items() if len(spec.sites) - len(plan) < spec.min_clients)
    row = Row(
        "too few valid updates",
        f"round {rnd}: every site's result corrupted (min_clients={spec.min_clients})",
        "round not aggregated; warning names the count and min_clients; every θ̄_i kept",
        "the whole round's updates",
    )
    record = records.get(rnd, {})
    row.check("round recorded as not aggregated", record.get("aggregated") is False, record.get("aggregated"))
    row.check(
        "min_clients warning in the server log",
        f"round {rnd}: only 0 valid update(s)" in server_log and f"min_clients={spec.min_clients}" in server_log,
    )
    for site in spec.sites:
        check_kept_model(row, files, site, rnd, spec.rounds)
    return row


def scenario_faults(work: str) -> List[Row]:
    """Runs the fault job and checks it."""
    spec = fault_job_spec(os.path.join(work, "faults"))
    files = run_job(spec)
    rows = fault_rows(files, spec)
    rows[0].check("the fault job finished (results.json written)", bool(files.results()), files.returncode)
    return rows


# -- server crash and resume ------------------------------------------------------------------------
def resume_spec(workspace: str, name: str = "resume", **overrides) -> JobSpec:
    """The 3-site, 3-round job of the crash-and-resume scenario."""
    spec = JobSpec(name=name, workspace=workspace, sites=list(SITES[:3]), rounds=3, min_clients=1, train_timeout=0)
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def crash_after_round(spec: JobSpec, crash_round: int, persisted: str, timeout: float = 300.0) -> Dict[str, Any]:
    """Runs the job and kills its whole process tree once round ``crash_round`` is persisted and the next is running.

    site-1 sleeps 600 s in round ``crash_round + 1`` (a FaultInjector ``timeout`` with no train_timeout), so the kill
    lands while that round is in flight. The persisted state folder is copied to ``persisted``.

    Returns:
        ``{"killed_after_s", "state_round", "returncode"}``.
    """
    spec = copy.deepcopy(spec)
    spec.faults = [{"site": spec.sites[0], "round": crash_round + 1, "kind": "timeout"}]
    spec.sleep_s = 600.0
    files = JobFiles(spec.root, spec.sites)
    state_json = os.path.join(files.server_dir, "state", "state.json")
    proc = start_job(spec, os.path.join(spec.workspace, spec.name + ".out.txt"))
    start, state_round = time.perf_counter(), None
    try:
        while time.perf_counter() - start < timeout and proc.poll() is None:
            if os.path.exists(state_json):
                with open(state_json) as f:
                    try:
                        state_round = json.load(f)["round"]
                    except ValueError:  # being replaced; read again
                        state_round = None
                if state_round == crash_round:
                    break
            time.sleep(0.5)
    finally:
        killed_after = time.perf_counter() - start
        _kill_tree(proc, spec.workspace)
    if os.path.exists(os.path.dirname(state_json)):
        shutil.copytree(os.path.dirname(state_json), persisted, dirs_exist_ok=True)
    return {"killed_after_s": killed_after, "state_round": state_round, "returncode": proc.returncode}


def resume_rows(work: str, crash_round: int = 0) -> List[Row]:
    """Server crash after round ``crash_round`` and a restart from the persisted state."""
    import torch
    from safetensors.torch import load_file

    from fedbip_nvflare.constants import FedBipKeys as K
    from fedbip_nvflare.server.state import ClientStateStore

    site_state = os.path.join(work, "site-state")  # outside both jobs' simulator workspaces
    first = resume_spec(os.path.join(work, "resume-crashed"), site_state_root=site_state)
    persisted = os.path.join(work, "persisted-state")
    crash = crash_after_round(first, crash_round, persisted)
    snapshots = os.path.join(work, "persisted-site-state")  # the killed job's snapshots (the resumed job prunes them)
    if os.path.isdir(site_state):
        shutil.copytree(site_state, snapshots, dirs_exist_ok=True)
    row = Row(
        "server crash",
        f"the job's whole process tree killed (SIGKILL) after round {crash_round} was persisted, round "
        f"{crash_round + 1} in flight; restarted with resume_from=<persisted state>",
        f"resumed at round {crash_round + 1} from bit-exact θ̄_i; every site restored its private head and round "
        f"history of round {crash_round}; the job finished",
        f"round {crash_round + 1}'s in-flight training (redone); nothing else",
    )
    row.check(f"state after round {crash_round} persisted at the kill", crash["state_round"] == crash_round, crash)
    row.check("no process of the killed job left", not pids_running_from(first.workspace))
    try:
        _, _, thetas, extra = ClientStateStore(persisted).load()
    except (OSError, ValueError) as e:
        row.check("persisted state loads with valid checksums", False, e)
        return [row]
    row.check("persisted state loads with valid checksums", sorted(thetas) == first.sites, sorted(thetas))
    run_key = extra.get(K.RUN_KEY)
    row.check("persisted state holds the run key", bool(run_key), sorted(extra))
    second = resume_spec(os.path.join(work, "resume-restarted"), resume_from=persisted, site_state_root=site_state)
    files = run_job(second)
    records = files.rounds()
    row.check(
        f"restarted job continued at round {crash_round + 1}",
        sorted(records) == list(range(crash_round + 1, second.rounds)),
        sorted(records),
    )
    row.check(
        "server log says it resumed", f"resumed from {persisted} after round {crash_round}" in files.log("server")
    )
    sent_dir = os.path.join(files.server_dir, "updates", f"round_{crash_round + 1:03d}")
    for site in second.sites:
        path = os.path.join(sent_dir, "sent_" + ClientStateStore.file_name(site))
        sent = load_file(path) if os.path.exists(path) else {}
        exact = set(sent) == set(thetas[site]) and all(torch.equal(sent[n], thetas[site][n]) for n in sent)
        row.check(f"{site} was sent its persisted θ̄_i bit-exact in round {crash_round + 1}", exact)
    results = files.results()
    row.check(
        "restarted job finished with every site validated",
        all("accuracy" in results.get("clients", {}).get(s, {}) for s in second.sites),
    )
    for site in second.sites:
        check_site_restored(row, files, site, snapshots, run_key, crash_round, second.rounds)
    return [row]


def check_site_restored(
    row: Row, files: JobFiles, site: str, snapshots: str, run_key: str, rnd: int, rounds: int
) -> None:
    """The resumed job's ``site`` restored its private head and history of round ``rnd`` from the killed job.

    Compared with the killed job's snapshot of round ``rnd`` (``snapshots``, copied before the resumed job ran): the
    head file the site restored has the snapshot head's SHA-256 (the site's log names the restored file's digest),
    and the site's final ``history.json`` starts with the snapshot's history (the killed job's records, bit for bit)
    and holds every round of the run once.
    """
    from fedbip_nvflare.client.site_state import HISTORY_FILE, SiteSnapshots
    from fedbip_nvflare.client.trainer_base import HEAD_FILE
    from fedbip_nvflare.state_files import sha256_file

    taken = SiteSnapshots(snapshots, site)
    folder = taken.snapshot_path(run_key, rnd)
    head, history = os.path.join(folder, HEAD_FILE), os.path.join(folder, HISTORY_FILE)
    ok = row.check(
        f"{site} snapshotted its head and history after round {rnd} in the killed job",
        os.path.exists(head) and os.path.exists(history),
        f"snapshot rounds {taken.rounds(run_key)}",
    )
    if not ok:
        return
    digest = sha256_file(head)[:16]
    row.check(
        f"{site} restored its round-{rnd} head bit for bit (SHA-256) in the resumed job",
        _has_line(files.log(site), f"{site}: restored its private state after round {rnd} of run {run_key}", digest),
        f"round-{rnd} head {digest}; killed job's snapshot rounds {taken.rounds(run_key)}",
    )
    with open(history) as f:
        before = json.load(f)
    path = os.path.join(files.site_dir(site), HISTORY_FILE)
    after = []
    if os.path.exists(path):
        with open(path) as f:
            after = json.load(f)
    row.check(
        f"{site}'s history keeps the killed job's rounds ≤ {rnd} and holds rounds 0..{rounds - 1}",
        bool(before) and after[: len(before)] == before and [h["round"] for h in after] == list(range(rounds)),
        [h.get("round") for h in after],
    )


# -- corrupted state ----------------------------------------------------------------------------------
def corrupt_state(source: str, target: str, how: str) -> str:
    """A copy of a state folder with one file damaged.

    Args:
        source: A persisted state folder.
        target: Where to put the damaged copy.
        how: ``"corrupted"`` (one byte of site-2's tensor file flipped), ``"truncated"`` (site-2's tensor file cut
            to half) or ``"truncated-index"`` (state.json cut to half).

    Returns:
        The damaged file's path.
    """
    from fedbip_nvflare.server.state import STATE_FILE, ClientStateStore

    shutil.copytree(source, target, dirs_exist_ok=True)
    name = STATE_FILE if how == "truncated-index" else ClientStateStore.file_name("site-2")
    path = os.path.join(target, name)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how == "corrupted":
        data[len(data) // 2] ^= 0xFF
    elif how in ("truncated", "truncated-index"):
        data = data[: len(data) // 2]
    else:
        raise ValueError(f"how must be 'corrupted', 'truncated' or 'truncated-index', got {how!r}")
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


STATE_ERRORS = {
    "corrupted": "does not match its checksum",
    "truncated": "does not match its checksum",
    "truncated-index": "is not valid JSON",
}


def state_rows(work: str, persisted: Optional[str] = None, hows: Sequence[str] = tuple(STATE_ERRORS)) -> List[Row]:
    """Restarts from damaged copies of a persisted state: each must stop before any training, with a clear error."""
    if persisted is None or not os.path.exists(persisted):
        persisted = os.path.join(work, "state-source")
        files = run_job(resume_spec(os.path.join(work, "state-source-job"), rounds=1))
        shutil.copytree(os.path.join(files.server_dir, "state"), persisted, dirs_exist_ok=True)
    rows = []
    for how in hows:
        damaged = os.path.join(work, f"state-{how}")
        path = corrupt_state(persisted, damaged, how)
        spec = resume_spec(os.path.join(work, f"resume-{how}"), resume_from=damaged)
        row = Row(
            {"corrupted": "corrupted state file", "truncated": "truncated state file"}.get(how, "truncated state.json"),
            f"{os.path.basename(path)} of the persisted state {how.replace('-index', '')}; job restarted from it",
            f"refused at the server's start: '{STATE_ERRORS[how]}'; no site trains",
            "nothing silently: the damaged state is never used (restore a good copy or start over)",
        )
        files = run_job(spec, timeout=300)
        server_log = files.log("server")
        row.check(
            "server log names the damaged file",
            os.path.basename(path) in server_log and STATE_ERRORS[how] in server_log,
        )
        row.check("no round ran", not files.rounds(), sorted(files.rounds()))
        row.check("no site trained", not any(files.trained(s) for s in spec.sites))
        row.check("the job ended (not hung)", files.returncode is not None, files.returncode)
        rows.append(row)
    return rows


# -- configuration errors -----------------------------------------------------------------------------
def construction_errors() -> List[Dict[str, Any]]:
    """Bad recipe options: each must raise at construction, naming the option. ``[{case, error, message}]``."""
    from fedbip_nvflare.recipes import FedBipRecipe

    cases: Dict[str, Callable[[], Any]] = {
        "unknown option": lambda: FedBipRecipe(num_round=2),
        "unknown per-site key": lambda: FedBipRecipe(per_site_config={"site-1": {"lora_r": 4}}),
        "data with both suite and train_path": lambda: FedBipRecipe(data={"suite": "text-tasks", "train_path": "x"}),
        "unknown negative policy": lambda: FedBipRecipe(negative="flip"),
        "negative train_timeout": lambda: FedBipRecipe(train_timeout=-1),
    }
    out = []
    for case, make in cases.items():
        try:
            make()
            out.append({"case": case, "error": None, "message": "no error"})
        except (TypeError, ValueError) as e:
            out.append({"case": case, "error": type(e).__name__, "message": str(e)})
    return out


CONSTRUCTION_NAMES = {  # what each construction error's message must name
    "unknown option": "num_round",
    "unknown per-site key": "lora_r",
    "data with both suite and train_path": "train_path",
    "unknown negative policy": "negative",
    "negative train_timeout": "train_timeout",
}


def config_rows(work: str) -> List[Row]:
    """The configuration-error sweep: construction, server start and site errors, each before any training."""
    rows = []
    construction = construction_errors()
    row = Row(
        "bad recipe options",
        ", ".join(c["case"] for c in construction),
        "FedBipRecipe(...) raises TypeError/ValueError naming the option; no job is built",
        "nothing",
    )
    for case in construction:
        named = CONSTRUCTION_NAMES[case["case"]] in case["message"]
        row.check(f"{case['case']}: error names it", case["error"] is not None and named, case["message"])
    rows.append(row)

    server_cases = {
        "model folder does not exist": (
            dict(model=os.path.join(work, "no-such-model")),
            "does not exist",
        ),
        "LoRA target modules match nothing": (dict(target_modules=["no_such_module"]), "no_such_module"),
    }
    for case, (overrides, expected) in server_cases.items():
        slug = case.split()[0].lower()
        spec = resume_spec(os.path.join(work, f"config-{slug}"), name=f"config_{slug}", rounds=1, **overrides)
        spec.sites = spec.sites[:2]
        files = run_job(spec, timeout=300)
        row = Row(
            case,
            f"FedBipRecipe({', '.join(f'{k}={v!r}' for k, v in overrides.items())}) run in SimEnv",
            "the server stops at its start (θ̄⁰ cannot be built) with the error in its log; no task is sent",
            "nothing",
        )
        row.check("server log has the clear error", expected in files.log("server"))
        row.check("no round ran", not files.rounds())
        row.check("no site trained", not any(files.trained(s) for s in spec.sites))
        row.check("the job ended (not hung)", files.returncode is not None, files.returncode)
        rows.append(row)
    rows.extend(site_config_rows(work))
    return rows


SITE_CONFIG_CASES = {  # site -> (case, what the site's log must say)
    "site-2": ("unknown data key", "unknown data config keys ['n_trian']"),
    "site-3": ("data file does not exist", "no_such_file.csv"),
    "site-4": ("LoRA rank differs from the server's", "has shape"),
}


def site_config_rows(work: str) -> List[Row]:
    """One job, three misconfigured sites (site-2 unknown data key, site-3 missing file, site-4 LoRA rank 4).

    ``FedBipRecipe`` refuses such site configurations when the job is built, so the job is exported with correct
    per-site configurations and then edited by hand (site-2's data, site-3's data, site-4's executor ``lora_r=4``),
    as a job folder a site receives could be, and it runs with ``nvflare simulator``.
    """
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import allow_fedbip_components

    edits = {
        "site-2": {"data": {**TINY_DATA, "n_trian": 16}},
        "site-3": {"data": {"train_path": os.path.join(work, "no_such_file.csv")}},
        "site-4": {"lora_r": 4},
    }
    spec = JobSpec(
        name="config_sites",
        workspace=os.path.join(work, "config-sites"),
        rounds=1,
        min_clients=1,
        site_data={site: dict(TINY_DATA) for site in ("site-2", "site-3")},
    )
    job_dir = os.path.join(spec.workspace, "job")
    build_recipe(spec).export(job_dir, env=SimEnv(clients=list(spec.sites)))
    for site, args in edits.items():
        config_path = os.path.join(job_dir, spec.name, f"app_{site}", "config", "config_fed_client.json")
        with open(config_path) as f:
            config = json.load(f)
        config["executors"][0]["executor"]["args"].update(args)
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)
    root = os.path.join(spec.workspace, "ws")
    allow_fedbip_components(root)
    log_path = os.path.join(spec.workspace, "simulator.out.txt")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        cmd = [os.path.join(os.path.dirname(sys.executable), "nvflare"), "simulator", os.path.join(job_dir, spec.name)]
        cmd += ["-w", root, "-c", ",".join(spec.sites), "-t", str(len(spec.sites))]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=400)
        except subprocess.TimeoutExpired:
            _kill_tree(proc, root)
            rc = None
    files = JobFiles(root, spec.sites)
    files.returncode, files.wall_s, files.stdout_path = rc, time.perf_counter() - start, log_path
    server_log, record = files.log("server"), files.rounds().get(0, {})
    rows = []
    for site, (case, expected) in SITE_CONFIG_CASES.items():
        row = Row(
            case,
            f"{site}'s job config ({'executor lora_r=4' if site == 'site-4' else 'data'}), others correct",
            (
                "the site's set-up fails at START_RUN, before any task"
                if site != "site-4"
                else "the site fails its first task (the received adapter does not match its own) before training"
            )
            + ", its log names the problem; the server names the site and goes on with the others",
            "that site's participation (it never trains); the others are unaffected",
        )
        row.check(f"{site}'s log has the clear error", expected in files.log(site))
        if site != "site-4":
            row.check(f"{site} failed at START_RUN", "site set-up failed, this site will not train" in files.log(site))
        row.check(f"{site} never trained", not files.trained(site))
        row.check(
            "server names the site and the error code",
            _has_line(server_log, f"Ignore the result from {site}", "EXECUTION_EXCEPTION"),
        )
        row.check("site-1 trained and was aggregated", "site-1" in record.get("clients", []), record.get("clients"))
        rows.append(row)
    return rows


# -- the report ---------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(info: Dict[str, Any]) -> str:
    """The faults table: one row per fault with its checks' tally, then every failed check."""
    lines = [
        "# Reliability: faults injected into real FedBip jobs",
        "",
        f"`{info.get('command', '')}` (commit {info.get('git_commit')}, {info.get('wall_time_s', 0):.0f} s). "
        "Real NVFlare SimEnv jobs: all-MiniLM-L6-v2 + LoRA, text-tasks, 16 examples per site, torch threads 1. "
        "Every outcome below is checked from the jobs' files and logs.",
        "",
        "| fault | injected how | outcome | data lost | checks |",
        "|---|---|---|---|---|",
    ]
    failed = []
    for row in info["rows"]:
        passed = sum(c["passed"] for c in row["checks"])
        total = len(row["checks"])
        mark = "✅" if passed == total and total else "❌"
        lines.append(
            f"| {_cell(row['fault'])} | {_cell(row['injected'])} | {_cell(row['outcome'])} | "
            f"{_cell(row['data_lost'])} | {mark} {passed}/{total} |"
        )
        failed += [f"{row['fault']}: {c['check']} ({c['detail']})" for c in row["checks"] if not c["passed"]]
    lines += ["", "Failed checks: " + ("none" if not failed else ""), *(f"* {_cell(f)}" for f in failed)]
    if info.get("hostile"):
        lines += ["", f"The hostile-client weight table is in [{info['hostile']}]({info['hostile']})."]
    return "\n".join(lines) + "\n"


def write(output: str, info: Dict[str, Any]) -> str:
    """Writes DIR/faults.json and DIR/faults.md; returns the markdown."""
    return write_report(output, JSON_FILE, MARKDOWN_FILE, info, markdown(info))


def all_passed(info: Dict[str, Any]) -> bool:
    """Whether every row has checks and all of them passed."""
    return all(row["checks"] and all(c["passed"] for c in row["checks"]) for row in info["rows"])


def run(output: str, work: str, scenarios: Sequence[str] = SCENARIOS, command: str = "") -> Dict[str, Any]:
    """Runs the scenarios and writes the report; returns the information written to faults.json."""
    start = time.perf_counter()
    rows: List[Row] = []
    timings: Dict[str, float] = {}
    for scenario in scenarios:
        t = time.perf_counter()
        if scenario == "faults":
            rows += scenario_faults(work)
        elif scenario == "resume":
            rows += resume_rows(work)
        elif scenario == "state":
            rows += state_rows(work, os.path.join(work, "persisted-state"))
        elif scenario == "config":
            rows += config_rows(work)
        else:
            raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
        timings[scenario] = time.perf_counter() - t
    info = {
        **provenance(command),
        "settings": {"data": TINY_DATA, "max_length": 32, "train_timeout": TRAIN_TIMEOUT, "plan": FAULT_PLAN},
        "rows": [r.to_dict() for r in rows],
        "scenario_wall_s": timings,
        "wall_time_s": time.perf_counter() - start,
    }
    write(output, info)
    return info


def run_hostile(output: str) -> bool:
    """benchmarks.hostile into ``output`` (4 sites, 64 examples, threads 1) under every negative-cosine policy.

    Returns:
        Whether every displacement was finite.
    """
    import math

    from benchmarks import hostile
    from fedbip_nvflare.core import NEGATIVE_POLICIES

    settings = {"sites": list(hostile.DEFAULT_SITES), "n_train": 64, "max_length": 64, "epochs": 1, "threads": 1}
    info = hostile.run(
        output,
        lambda: hostile.real_task_vectors(hostile.DEFAULT_SITES, threads=1),
        policies=NEGATIVE_POLICIES,
        settings=settings,
        command=f"python -m benchmarks.faults (hostile table, policies {' '.join(NEGATIVE_POLICIES)}, threads 1)",
    )
    print(hostile.markdown(info))
    return all(math.isfinite(c["summary"]["displacement_max"]) for c in info["cases"])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", help="output folder DIR")
    p.add_argument("--work", default=None, help="folder for the jobs' workspaces (default: DIR/work, removed after)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--no-hostile", action="store_true", help="do not run benchmarks.hostile into DIR")
    p.add_argument("--keep-work", action="store_true", help="keep the jobs' workspaces")
    p.add_argument("--job-spec", help=argparse.SUPPRESS)  # internal: run one job spec in this process
    args = p.parse_args(argv)
    if not args.job_spec and not args.output:
        p.error("--output is required")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (or one job with --job-spec); 0 if every check passed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.job_spec:
        with open(args.job_spec) as f:
            return run_spec(JobSpec(**json.load(f)))
    output = os.path.abspath(args.output)
    work = os.path.abspath(args.work or os.path.join(output, "work"))
    if os.path.exists(work) and not args.work:
        shutil.rmtree(work)
    hostile_ok = True
    if not args.no_hostile:
        hostile_ok = run_hostile(output)
    info = run(output, work, args.scenarios, command_line("benchmarks.faults", argv))
    if not args.no_hostile:
        from benchmarks.hostile import MARKDOWN_FILE as HOSTILE_FILE

        info["hostile"] = HOSTILE_FILE
        write(output, info)
    if not args.keep_work and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(info))
    return 0 if all_passed(info) and hostile_ok else 1


if __name__ == "__main__":
    sys.exit(main())
