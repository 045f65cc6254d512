"""End-to-end cost of FedBip against NVFlare's stock FedAvg: server wall time per round and bytes per client.

python -m benchmarks.end_to_end --output DIR
python -m benchmarks.end_to_end --output DIR --num-clients 8 --num-rounds 4 --repeats 3

Both methods run as ``benchmarks.quality`` runs them: ``FedBipRecipe`` in NVFlare's simulator (SimEnv), with the same
client executor (``FedBipExecutor``), data, model, LoRA settings and budget. "fedbip" is FedBip's controller; "fedavg"
is NVFlare's stock ``FedAvg`` workflow averaging the LoRA tensors (heads stay local), then a final validate task. The
runs alternate (fedbip, fedavg, fedbip, fedavg, ... for ``--repeats``), so machine noise hits both alike.

Time, from the server's structured log (``server/log.json``, millisecond timestamps):

* round seconds: from the workflow's round-start line to the next one (FedBip: "FedBip round k/N"; FedAvg:
  "Round r started."); the last round ends where the workflow hands over to the final validation (FedBip: its
  first "Sending task validate"; FedAvg: "Finished FedAvg."). A round so covers sending the tasks, the clients'
  work, receiving the results, aggregating and persisting. Round 0 also covers each site loading the model and data
  (a site does on its first task): the "steady" figures leave it out, and the headline ratio uses them.
* after_last_result_s: from the round's last "got result from client" to the round's end: the server's work once
  every result is in (with up to one 0.5 s task-check period of the workflow's wait loop). FedAvg adds each result
  to its running average as it arrives, FedBip aggregates after the last one.
* aggregation_s (FedBip): what ``FedBipController.aggregate_round`` took, from the server's ``rounds.jsonl``.
* client_task_s: per site, from its train task passing the task-data filter to its result passing the
  result filter (the site's own clock).
* total seconds: ``recipe.execute`` wall time (simulator start-up, all rounds, final validation, shutdown).

Bytes: a client filter (``benchmarks.payload_log.PayloadSizeLog``), first on task data and last on task results,
records ``len(fobs.dumps(shareable))`` of every task in and result out, and the serialized sizes of its parts (DXO
data, DXO meta, headers), in ``<site run dir>/payload_bytes.jsonl``.

Writes DIR/end_to_end.json (settings, environment, every run's raw numbers, summaries) and DIR/end_to_end.md (the
table, also printed); DIR/runs/<method>-<k>/ keeps each run's simulator output (run.log), the server's log.json,
FedBip's rounds.jsonl and every site's payload_bytes.jsonl. Simulator workspaces go to a fresh folder under the
system's temporary folder (``--workspace`` to choose); they are removed at the end unless ``--keep-workspace``.
"""

import argparse
import datetime
import glob
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.payload_log import PAYLOAD_FILE, PayloadSizeLog  # noqa: E402
from benchmarks.quality import (  # noqa: E402
    DEFAULT_MODEL,
    METHODS,
    SUITES,
    RunSpec,
    _output_to,
    method_kwargs,
    positive_int,
    result_problems,
)
from benchmarks.reporting import command_line, provenance, write_report  # noqa: E402
from fedbip_nvflare.constants import FedBipKeys as K  # noqa: E402
from fedbip_nvflare.results import load_results  # noqa: E402

logger = logging.getLogger("benchmarks.end_to_end")

METHOD_NAMES = ("fedbip", "fedavg")
JSON_FILE = "end_to_end.json"
MARKDOWN_FILE = "end_to_end.md"
RUNS_DIR = "runs"
RUN_LOG = "run.log"
SERVER_LOG = "log.json"
TARGET_RATIO = 1.15
TASKS = (K.TRAIN_TASK, K.VALIDATE_TASK)
_SIZE_PARTS = ("bytes", "data_bytes", "meta_bytes", "header_bytes")
_RESULT_RE = re.compile(r"got result from client (\S+) for task: name=(\S+),")
_ASSIGNED_RE = re.compile(r"assigned task to client (\S+): name=(\S+),")


# -- where a workflow's rounds start and end in the server log ----------------------------------------------
@dataclass(frozen=True)
class RoundMarkers:
    """The server-log lines that delimit a workflow's rounds.

    Attributes:
        logger: Logger name of the workflow's lines (its class name).
        start: Regular expression of a round's first line; group 1 is the round number.
        first_round: The number the first round's line shows (round index = number - first_round).
        end: Regular expression of the line, after the last round's start, that ends the last round.
    """

    logger: str
    start: str
    first_round: int
    end: str


ROUND_MARKERS: Dict[str, RoundMarkers] = {
    # FedBipController.run: "FedBip round k/N" at each round's top; then _final_validation sends the validate tasks.
    "fedbip": RoundMarkers("FedBipController", r"^FedBip round (\d+)/\d+$", 1, r"^Sending task validate\b"),
    # nvflare FedAvg.run: "Round r started." at each round's top, "Finished FedAvg." after the last one.
    "fedavg": RoundMarkers("FedAvg", r"Round (\d+) started\.", 0, r"Finished FedAvg\."),
}


def read_server_log(path: str) -> List[Tuple[float, str, str]]:
    """The lines of an NVFlare ``log.json`` as ``(epoch seconds, logger name, message)``, in file order."""
    events = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
                stamp = datetime.datetime.strptime(record["asctime"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except (ValueError, KeyError, TypeError):
                continue  # a line that is not a log record (e.g. an interleaved print)
            events.append((stamp, str(record.get("name", "")), str(record.get("message", ""))))
    return events


def round_times(events: Sequence[Tuple[float, str, str]], markers: RoundMarkers, num_rounds: int) -> List[dict]:
    """Every round's server-side timing from the server log's lines.

    Args:
        events: ``read_server_log``'s lines.
        markers: The workflow's round markers.
        num_rounds: Rounds the job ran.

    Returns:
        One dict per round: ``round``, ``seconds``, ``first_task_s`` (the first train task a client took, from the
        round's start), ``last_result_s`` (the last train result received, from the round's start),
        ``after_last_result_s`` (from the last result to the round's end) and ``results`` (how many arrived).

    Raises:
        ValueError: A round's start, or the last round's end, is not in the log.
    """
    start_re, end_re = re.compile(markers.start), re.compile(markers.end)
    starts: Dict[int, float] = {}
    for stamp, name, message in events:
        match = start_re.search(message) if name == markers.logger else None
        if match:
            starts.setdefault(int(match.group(1)) - markers.first_round, stamp)
    missing = [r for r in range(num_rounds) if r not in starts]
    if missing:
        raise ValueError(f"no start line of round(s) {missing} ({markers.start!r} by {markers.logger})")
    last_start = starts[num_rounds - 1]
    ends = [s for s, name, msg in events if name == markers.logger and s >= last_start and end_re.search(msg)]
    if not ends:
        raise ValueError(f"no end line of the last round ({markers.end!r} by {markers.logger})")
    bounds = [starts[r] for r in range(num_rounds)] + [ends[0]]

    def train_lines(pattern: re.Pattern) -> List[float]:
        found = []
        for stamp, name, message in events:
            match = pattern.search(message) if name == "ServerRunner" else None
            if match and match.group(2) == K.TRAIN_TASK:
                found.append(stamp)
        return found

    results, assigned = train_lines(_RESULT_RE), train_lines(_ASSIGNED_RE)
    rounds = []
    for r in range(num_rounds):
        begin, end = bounds[r], bounds[r + 1]
        arrived = [s for s in results if begin <= s <= end]
        taken = [s for s in assigned if begin <= s <= end]
        rounds.append(
            {
                "round": r,
                "seconds": end - begin,
                "first_task_s": min(taken) - begin if taken else None,
                "last_result_s": max(arrived) - begin if arrived else None,
                "after_last_result_s": end - max(arrived) if arrived else None,
                "results": len(arrived),
            }
        )
    return rounds


# -- bytes per client --------------------------------------------------------------------------------------
def read_payloads(job_dir: str) -> List[dict]:
    """Every ``PayloadSizeLog`` entry of a job's sites (all ``payload_bytes.jsonl`` under its workspace)."""
    entries = []
    for path in sorted(glob.glob(os.path.join(job_dir, "**", PAYLOAD_FILE), recursive=True)):
        with open(path) as f:
            entries += [json.loads(line) for line in f if line.strip()]
    return entries


def payload_problems(entries: Sequence[Mapping[str, Any]], sites: Sequence[str], num_rounds: int) -> List[str]:
    """What is missing: a train task in or result out for a (site, round), or a validate task in or out per site."""
    seen = {(e["site"], e["task"], e["round"], e["direction"]) for e in entries}
    expected = [(s, K.TRAIN_TASK, r, d) for s in sites for r in range(num_rounds) for d in ("in", "out")]
    expected += [(s, K.VALIDATE_TASK, num_rounds, d) for s in sites for d in ("in", "out")]
    return [f"no payload entry for {key}" for key in expected if key not in seen]


def client_task_seconds(entries: Sequence[Mapping[str, Any]]) -> Dict[int, Dict[str, float]]:
    """``{round: {site: seconds}}`` from a train task passing the task-data filter to its result passing out."""
    times: Dict[Tuple[str, int], Dict[str, float]] = {}
    for e in entries:
        if e["task"] == K.TRAIN_TASK:
            times.setdefault((e["site"], e["round"]), {})[e["direction"]] = e["time"]
    out: Dict[int, Dict[str, float]] = {}
    for (site, rnd), t in sorted(times.items()):
        if "in" in t and "out" in t:
            out.setdefault(rnd, {})[site] = t["out"] - t["in"]
    return out


def _stats(values: Iterable[Optional[float]]) -> Optional[Dict[str, float]]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def bytes_summary(entries: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Per (task, direction): statistics of every size part over sites and rounds, and the DXO meta keys seen."""
    summary: Dict[str, Any] = {}
    for task in TASKS:
        for direction in ("in", "out"):
            chosen = [e for e in entries if e["task"] == task and e["direction"] == direction]
            if not chosen:
                continue
            item = {part: _stats(e[part] for e in chosen) for part in _SIZE_PARTS + ("raw_bytes",)}
            item["meta_keys"] = sorted({k for e in chosen for k in e.get("meta_keys", [])})
            summary[f"{task}_{direction}"] = item
    return summary


# -- one run -----------------------------------------------------------------------------------------------
def job_name(method: str) -> str:
    """The NVFlare job name of a method's run."""
    return "e2e_" + method


def build_recipe(method: str, spec: RunSpec):
    """The method's recipe (as ``benchmarks.quality`` builds it) with ``PayloadSizeLog`` on every site.

    The log is the first task-data filter and the last task-result filter (the recipes add no others), so it
    sees the task as it arrived and the result as it leaves.
    """
    shared, own = method_kwargs(method, spec, job_name(method))
    recipe = METHODS[method].recipe(**shared, **own)
    recipe.add_client_input_filter(PayloadSizeLog("in"), tasks=list(TASKS))
    recipe.add_client_output_filter(PayloadSizeLog("out"), tasks=list(TASKS))
    return recipe


def _keep(job_dir: str, out: str) -> None:
    """Copies a run's server log.json, FedBip's rounds.jsonl and every site's payload log into ``out``."""
    server_log = os.path.join(job_dir, "server", SERVER_LOG)
    if os.path.exists(server_log):
        shutil.copy(server_log, os.path.join(out, "server_" + SERVER_LOG))
    for path in glob.glob(os.path.join(job_dir, "server", "**", K.STATE_DIR, K.ROUNDS_FILE), recursive=True):
        shutil.copy(path, out)
    for path in glob.glob(os.path.join(job_dir, "site-*", "**", PAYLOAD_FILE), recursive=True):
        site = os.path.relpath(path, job_dir).split(os.sep)[0]
        shutil.copy(path, os.path.join(out, f"{site}_{PAYLOAD_FILE}"))


def _aggregation_seconds(job_dir: str) -> List[Optional[float]]:
    """FedBip's ``aggregation_s`` per round from the server's rounds.jsonl (empty if there is none)."""
    paths = glob.glob(os.path.join(job_dir, "server", "**", K.STATE_DIR, K.ROUNDS_FILE), recursive=True)
    if not paths:
        return []
    with open(paths[0]) as f:
        return [json.loads(line).get("aggregation_s") for line in f if line.strip()]


def run_one(method: str, repeat: int, spec: RunSpec, workspace: str, output: str) -> Dict[str, Any]:
    """Runs one job and measures it; never raises for a failing run.

    Args:
        method: "fedbip" or "fedavg".
        repeat: The repeat's index (names the run ``<method>-<repeat>``).
        spec: Sizes, data and budget (identical for both methods).
        workspace: Root of the simulator workspaces (the run's is ``<workspace>/<method>-<repeat>``).
        output: Output folder DIR (the run's files go to ``DIR/runs/<method>-<repeat>``).

    Returns:
        ``{"method", "repeat", "status": "ok" | "failed", "error", "wall_time_s", "rounds": [...], "payloads":
        [...], "bytes": bytes_summary, "mean_accuracy"}``; each round has ``round_times``' keys plus
        ``aggregation_s`` (FedBip) and ``client_task_s`` (max and mean over sites).
    """
    run_name = f"{method}-{repeat}"
    out = os.path.join(output, RUNS_DIR, run_name)
    root = os.path.join(workspace, run_name)
    for stale in (root, out):
        shutil.rmtree(stale, ignore_errors=True)
    os.makedirs(out)
    record: Dict[str, Any] = {"method": method, "repeat": repeat, "status": "ok", "error": None}
    job_dir = os.path.join(root, job_name(method))
    start = time.perf_counter()
    try:
        from nvflare.recipe.sim_env import SimEnv

        with _output_to(os.path.join(out, RUN_LOG)):
            recipe = build_recipe(method, spec)
            recipe.execute(SimEnv(num_clients=spec.num_clients, num_threads=spec.threads, workspace_root=root))
        record["wall_time_s"] = time.perf_counter() - start
        _keep(job_dir, out)
        results = load_results(job_dir, method=method)
        problems = result_problems(results, spec.num_clients)
        record["mean_accuracy"] = statistics.fmean(c["accuracy"] for c in results["clients"].values())

        rounds = round_times(
            read_server_log(os.path.join(job_dir, "server", SERVER_LOG)), ROUND_MARKERS[method], spec.num_rounds
        )
        aggregation = _aggregation_seconds(job_dir)
        entries = read_payloads(job_dir)
        tasks = client_task_seconds(entries)
        for r in rounds:
            r["aggregation_s"] = aggregation[r["round"]] if r["round"] < len(aggregation) else None
            per_site = tasks.get(r["round"], {})
            r["client_task_s_max"] = max(per_site.values()) if per_site else None
            r["client_task_s_mean"] = statistics.fmean(per_site.values()) if per_site else None
            if r["results"] != spec.num_clients:
                problems.append(f"round {r['round']}: {r['results']} of {spec.num_clients} results in the server log")
        if method == "fedbip" and len(aggregation) != spec.num_rounds:
            problems.append(f"rounds.jsonl has {len(aggregation)} records for {spec.num_rounds} rounds")
        problems += payload_problems(entries, sorted(results["clients"]), spec.num_rounds)
        record["rounds"] = rounds
        record["bytes"] = bytes_summary(entries)
        record["payloads"] = [{k: v for k, v in e.items() if not k.endswith("_keys")} for e in entries]
        if problems:
            raise RuntimeError("incomplete run: " + "; ".join(problems))
    except Exception as e:  # one failing run must not stop the others
        record.setdefault("wall_time_s", time.perf_counter() - start)
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        with open(os.path.join(out, "error.txt"), "w") as f:
            f.write(traceback.format_exc())
        logger.error("%s failed: %s (details: %s)", run_name, record["error"], out)
    return record


# -- summaries ---------------------------------------------------------------------------------------------
def method_summary(runs: Sequence[Mapping[str, Any]], method: str) -> Optional[Dict[str, Any]]:
    """One method's figures over its successful runs (None if it has none).

    Returns:
        ``runs``, ``rounds_per_run``, ``round_s`` and ``steady_round_s`` (rounds 1+; round 0 if there is only one
        round) and ``after_last_result_s``, ``aggregation_s``, ``client_task_s_max`` (statistics over every round of
        every run), ``total_s`` (statistics of the runs' wall times), ``bytes_in`` / ``bytes_out`` (train task,
        per client per round: statistics of ``len(fobs.dumps(shareable))``), ``validate_bytes_in`` /
        ``validate_bytes_out`` and ``mean_accuracy``.
    """
    ok = [r for r in runs if r["method"] == method and r["status"] == "ok"]
    if not ok:
        return None
    rounds = [x for r in ok for x in r["rounds"]]
    steady = [x for x in rounds if x["round"] >= 1] or rounds

    def of(items: Sequence[Mapping[str, Any]], key: str) -> Optional[Dict[str, float]]:
        return _stats(x.get(key) for x in items)

    payloads = [p for r in ok for p in r["payloads"]]

    def size(task: str, direction: str) -> Optional[Dict[str, float]]:
        return _stats(p["bytes"] for p in payloads if p["task"] == task and p["direction"] == direction)

    return {
        "runs": len(ok),
        "rounds_per_run": len(ok[0]["rounds"]),
        "round_s": of(rounds, "seconds"),
        "steady_round_s": of(steady, "seconds"),
        "after_last_result_s": of(steady, "after_last_result_s"),
        "aggregation_s": of(rounds, "aggregation_s"),
        "client_task_s_max": of(steady, "client_task_s_max"),
        "total_s": _stats(r["wall_time_s"] for r in ok),
        "bytes_in": size(K.TRAIN_TASK, "in"),
        "bytes_out": size(K.TRAIN_TASK, "out"),
        "validate_bytes_in": size(K.VALIDATE_TASK, "in"),
        "validate_bytes_out": size(K.VALIDATE_TASK, "out"),
        "mean_accuracy": _stats(r["mean_accuracy"] for r in ok),
    }


def _ratio(a: Optional[Mapping[str, float]], b: Optional[Mapping[str, float]], key: str) -> Optional[float]:
    if not a or not b or not b.get(key):
        return None
    return a[key] / b[key]


def compare(runs: Sequence[Mapping[str, Any]], summaries: Mapping[str, Any]) -> Dict[str, Any]:
    """FedBip against FedAvg: time ratios (also per alternating pair) and byte differences per (round, site).

    Returns:
        ``{"steady_round_mean_ratio" (the headline), "round_mean_ratio", "round_median_ratio", "total_mean_ratio",
        "pair_ratios": [per repeat: FedBip's mean steady round / FedAvg's], "bytes": {direction: {"diff": stats
        of FedBip − FedAvg bytes over matching (repeat, round, site) train entries, "relative": the same over
        FedAvg's size, "parts": mean difference per size part}}, "meta_keys": {direction: {"fedbip_only",
        "fedavg_only"}}}``.
    """
    fb, fa = summaries.get("fedbip"), summaries.get("fedavg")
    result: Dict[str, Any] = {
        "steady_round_mean_ratio": _ratio(fb and fb["steady_round_s"], fa and fa["steady_round_s"], "mean"),
        "round_mean_ratio": _ratio(fb and fb["round_s"], fa and fa["round_s"], "mean"),
        "round_median_ratio": _ratio(fb and fb["round_s"], fa and fa["round_s"], "median"),
        "total_mean_ratio": _ratio(fb and fb["total_s"], fa and fa["total_s"], "mean"),
    }
    by_run = {(r["method"], r["repeat"]): r for r in runs if r["status"] == "ok"}
    pairs = []
    for (method, repeat), run in sorted(by_run.items()):
        other = by_run.get(("fedavg", repeat))
        if method == "fedbip" and other is not None:
            mine, theirs = (
                statistics.fmean(x["seconds"] for x in (r["rounds"][1:] or r["rounds"])) for r in (run, other)
            )
            pairs.append({"repeat": repeat, "ratio": mine / theirs})
    result["pair_ratios"] = pairs

    def keyed(method: str, direction: str) -> Dict[tuple, Mapping[str, Any]]:
        return {
            (run["repeat"], p["round"], p["site"]): p
            for (m, _), run in by_run.items()
            if m == method
            for p in run["payloads"]
            if p["task"] == K.TRAIN_TASK and p["direction"] == direction
        }

    result["bytes"] = {}
    for direction in ("in", "out"):
        mine, theirs = keyed("fedbip", direction), keyed("fedavg", direction)
        common = sorted(set(mine) & set(theirs))
        if not common:
            continue
        result["bytes"][direction] = {
            "pairs": len(common),
            "diff": _stats(mine[k]["bytes"] - theirs[k]["bytes"] for k in common),
            "relative": _stats((mine[k]["bytes"] - theirs[k]["bytes"]) / theirs[k]["bytes"] for k in common),
            "parts": {part: statistics.fmean(mine[k][part] - theirs[k][part] for k in common) for part in _SIZE_PARTS},
        }
    result["meta_keys"] = {}
    for direction in ("in", "out"):
        key = f"{K.TRAIN_TASK}_{direction}"
        sets = {
            m: {k for r in runs if r["method"] == m and r["status"] == "ok" for k in r["bytes"][key]["meta_keys"]}
            for m in METHOD_NAMES
        }
        result["meta_keys"][direction] = {
            "fedbip_only": sorted(sets["fedbip"] - sets["fedavg"]),
            "fedavg_only": sorted(sets["fedavg"] - sets["fedbip"]),
        }
    return result


# -- report ------------------------------------------------------------------------------------------------
def _num(stats: Optional[Mapping[str, float]], key: str = "mean", digits: int = 2) -> str:
    return "—" if not stats or stats.get(key) is None else f"{stats[key]:.{digits}f}"


def _bytes(stats: Optional[Mapping[str, float]]) -> str:
    if not stats:
        return "—"
    if stats["min"] == stats["max"]:
        return f"{stats['mean']:,.0f}"
    return f"{stats['mean']:,.0f} ({stats['min']:,.0f}–{stats['max']:,.0f})"


def _x(ratio: Optional[float]) -> str:
    return "—" if ratio is None else f"{ratio:.3f}×"


def markdown(info: Mapping[str, Any]) -> str:
    """The report: the main table (per method and the FedBip/FedAvg ratios), bytes, then every round."""
    s, env, summaries, cmp = info["settings"], info["environment"], info["summaries"], info["comparison"]
    steady = "rounds 1+" if s["num_rounds"] > 1 else "round 0 (only round)"
    lines = [
        "# FedBip vs NVFlare FedAvg, end to end (SimEnv)",
        "",
        f"`{info['command']}`",
        "",
        f"{s['num_clients']} clients, {s['num_rounds']} rounds, suite {s['suite']}, {s['n_train']} train / "
        f"{s['n_test']} test examples per client (per-round evaluation on {s['round_eval_examples']}), "
        f"{s['local_epochs']} local epoch(s), max_length {s['max_length']}, torch threads {s['torch_threads']}, "
        f"model {s['model']}; runs alternate fedbip, fedavg × {s['repeats']}. torch {env['torch']}, "
        f"{env['cpus_usable']} usable CPUs ({env['cpu_count']} in all), commit {info['git_commit']}.",
        "",
        f"Per-round seconds: server log, round start to the next round's start (round 0 includes each site's model "
        f"load; steady: {steady}). Total: `recipe.execute` wall time. Bytes: `len(fobs.dumps(shareable))` of the "
        "train task each client receives (in) and the result it sends (out), per client per round: mean "
        "(min–max).",
        "",
        "| method | runs | rounds | mean round s | median round s | steady mean round s | total s (mean) "
        "| bytes in / client / round | bytes out / client / round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHOD_NAMES:
        m = summaries.get(method)
        if m is None:
            lines.append(f"| {method} | 0 | — | — | — | — | — | — | — |")
            continue
        lines.append(
            f"| {method} | {m['runs']} | {m['rounds_per_run']} | {_num(m['round_s'])} "
            f"| {_num(m['round_s'], 'median')} | {_num(m['steady_round_s'])} | {_num(m['total_s'], digits=1)} "
            f"| {_bytes(m['bytes_in'])} | {_bytes(m['bytes_out'])} |"
        )
    lines.append(
        f"| **fedbip / fedavg** | | | {_x(cmp['round_mean_ratio'])} | {_x(cmp['round_median_ratio'])} "
        f"| **{_x(cmp['steady_round_mean_ratio'])}** | {_x(cmp['total_mean_ratio'])} | | |"
    )
    headline = cmp["steady_round_mean_ratio"]
    verdict = "" if headline is None else (" (within)" if headline <= TARGET_RATIO else " (over)")
    pairs = ", ".join(f"{p['ratio']:.3f}" for p in cmp["pair_ratios"]) or "—"
    fb, fa = summaries.get("fedbip") or {}, summaries.get("fedavg") or {}
    lines += [
        "",
        f"**Headline: FedBip / FedAvg steady per-round time {_x(headline)}** (target ≤ {TARGET_RATIO}×{verdict}); "
        f"per alternating pair: {pairs}.",
        "",
        f"Server work after a round's last result (steady rounds, mean): fedbip {_num(fb.get('after_last_result_s'))} "
        f"s, fedavg {_num(fa.get('after_last_result_s'))} s (both include up to 0.5 s of the wait loop's task-check "
        f"period). FedBip `aggregate_round`: mean {_num(fb.get('aggregation_s'), digits=4)} s, max "
        f"{_num(fb.get('aggregation_s'), 'max', 4)} s per round. Slowest client's train task (steady, mean): fedbip "
        f"{_num(fb.get('client_task_s_max'))} s, fedavg {_num(fa.get('client_task_s_max'))} s. Final mean accuracy: "
        f"fedbip {_num(fb.get('mean_accuracy'), digits=3)}, fedavg {_num(fa.get('mean_accuracy'), digits=3)}.",
        "",
        "## Bytes per client per round (train task): FedBip − FedAvg",
        "",
        "| direction | pairs | mean diff (bytes) | diff range | relative | DXO data | DXO meta | headers "
        "| meta keys only FedBip | meta keys only FedAvg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for direction in ("in", "out"):
        b = cmp["bytes"].get(direction)
        keys = cmp["meta_keys"].get(direction, {})
        if not b:
            continue
        p = b["parts"]
        lines.append(
            f"| {direction} | {b['pairs']} | {b['diff']['mean']:+,.1f} | {b['diff']['min']:+,.0f} to "
            f"{b['diff']['max']:+,.0f} | {100 * b['relative']['mean']:+.3f}% | {p['data_bytes']:+,.1f} "
            f"| {p['meta_bytes']:+,.1f} | {p['header_bytes']:+,.1f} | {', '.join(keys.get('fedbip_only', [])) or '—'} "
            f"| {', '.join(keys.get('fedavg_only', [])) or '—'} |"
        )
    lines += [
        "",
        "Where they differ: headers carry the sending workflow's component id in NVFlare's cookie jar "
        "(`fedbip_controller` against `fedavg`, 11 bytes); NVFlare's FedAvg sends its global model with the "
        "previous round's aggregated metrics and aggregation info in the DXO meta (the keys above, from round 1 "
        "on), FedBip sends the parameters only. Results are the same executor's. `fobs.dumps` writes the arrays "
        "inline; on the wire NVFlare 2.9 streams them through its download service (the server log's "
        "`download tx ... bytes` lines).",
        "",
        f"Validate task (once per client): in fedbip {_bytes(fb.get('validate_bytes_in'))}, fedavg "
        f"{_bytes(fa.get('validate_bytes_in'))}; out fedbip {_bytes(fb.get('validate_bytes_out'))}, fedavg "
        f"{_bytes(fa.get('validate_bytes_out'))} bytes. Adapter raw size: "
        f"{_bytes((fb or fa).get('raw_bytes_in'))} bytes.",
        "",
        "## Rounds",
        "",
        "| run | round | round s | first task taken s | last result s | after last result s | aggregate_round s "
        "| slowest client task s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in info["runs"]:
        name = f"{run['method']}-{run['repeat']}"
        if run["status"] != "ok":
            lines.append(f"| {name} | failed: {run['error']} | | | | | | |")
            continue
        for r in run["rounds"]:
            lines.append(
                f"| {name} | {r['round']} | {r['seconds']:.2f} | {_cell(r['first_task_s'])} "
                f"| {_cell(r['last_result_s'])} | {_cell(r['after_last_result_s'])} "
                f"| {_cell(r['aggregation_s'], 4)} | {_cell(r['client_task_s_max'])} |"
            )
    return "\n".join(lines) + "\n"


def _cell(value: Optional[float], digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def write(output: str, info: Mapping[str, Any]) -> str:
    """Writes DIR/end_to_end.json and DIR/end_to_end.md; returns the markdown."""
    return write_report(output, JSON_FILE, MARKDOWN_FILE, info, markdown(info))


def summarize(info: Dict[str, Any]) -> None:
    """Fills ``info["summaries"]`` (per method) and ``info["comparison"]`` from ``info["runs"]``."""
    summaries = {m: method_summary(info["runs"], m) for m in METHOD_NAMES}
    for method, summary in summaries.items():
        if summary is not None:
            raw = [
                p["raw_bytes"]
                for r in info["runs"]
                if r["method"] == method and r["status"] == "ok"
                for p in r["payloads"]
                if p["task"] == K.TRAIN_TASK and p["direction"] == "in"
            ]
            summary["raw_bytes_in"] = _stats(raw)
    info["summaries"] = summaries
    info["comparison"] = compare(info["runs"], summaries)


# -- command line ------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="output folder DIR")
    p.add_argument("--suite", default="text-tasks", choices=sorted(SUITES))
    p.add_argument("--num-clients", type=positive_int, default=4)
    p.add_argument("--num-rounds", type=positive_int, default=3)
    p.add_argument("--max-examples", type=positive_int, default=100, help="training examples per client")
    p.add_argument("--test-examples", type=positive_int, default=100, help="test examples per client")
    p.add_argument(
        "--round-eval-examples", type=positive_int, default=50, help="test examples for each round's evaluation"
    )
    p.add_argument("--local-epochs", type=positive_int, default=1)
    p.add_argument("--max-length", type=positive_int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="LoRA learning rate")
    p.add_argument("--torch-threads", type=positive_int, default=1, help="torch CPU threads per client")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="clients the simulator runs in parallel (default: all)"
    )
    p.add_argument("--repeats", type=positive_int, default=2, help="runs per method, alternating fedbip and fedavg")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF model id or local folder")
    p.add_argument("--workspace", default=None, help="root of the simulator workspaces (default: a new temp folder)")
    p.add_argument("--keep-workspace", action="store_true", help="keep the simulator workspaces")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark and prints the table.

    Returns:
        0 if every run succeeded, 1 if any failed.
    """
    from benchmarks.throughput import environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    output = os.path.abspath(args.output)
    spec = RunSpec(
        suite=args.suite,
        num_clients=args.num_clients,
        num_rounds=args.num_rounds,
        n_train=args.max_examples,
        n_test=args.test_examples,
        local_epochs=args.local_epochs,
        max_length=args.max_length,
        threads=args.threads,
        torch_threads=args.torch_threads,
        seed=args.seed,
        model=args.model,
        learning_rate=args.learning_rate,
        round_eval_examples=args.round_eval_examples,
    )
    workspace = os.path.abspath(args.workspace) if args.workspace else tempfile.mkdtemp(prefix="fedbip_e2e_")
    os.makedirs(workspace, exist_ok=True)
    os.makedirs(output, exist_ok=True)
    info: Dict[str, Any] = {
        **provenance(command_line("benchmarks.end_to_end", argv)),
        "settings": {**asdict(spec), "repeats": args.repeats, "methods": list(METHOD_NAMES)},
        "data": spec.data_config(),
        "environment": environment(),
        "workspace": workspace,
        "runs": [],
    }
    start = time.perf_counter()
    try:
        for repeat in range(args.repeats):
            for method in METHOD_NAMES:
                logger.info("running %s, repeat %d of %d ...", method, repeat + 1, args.repeats)
                run = run_one(method, repeat, spec, workspace, output)
                logger.info("%s-%d: %s in %.1f s", method, repeat, run["status"], run["wall_time_s"])
                info["runs"].append(run)
                info["wall_time_s"] = time.perf_counter() - start
                summarize(info)
                write(output, info)  # an interrupted benchmark keeps what it measured
    finally:
        if not args.keep_workspace:  # this run's simulator workspaces, and the root if it was made here
            for run in info["runs"]:
                shutil.rmtree(os.path.join(workspace, f"{run['method']}-{run['repeat']}"), ignore_errors=True)
            if not args.workspace:
                shutil.rmtree(workspace, ignore_errors=True)
    print(markdown(info))
    failed = [r for r in info["runs"] if r["status"] != "ok"]
    for r in failed:
        print(f"FAILED: {r['method']}-{r['repeat']}: {r['error']} ({os.path.join(output, RUNS_DIR)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
