"""Accuracy cost of privacy filters on FedBip's results (text-tasks, small, 1 seed).

python -m benchmarks.privacy --output benchmarks/results/reliability
python -m benchmarks.privacy --output DIR --cases none percentile --n-train 32 --rounds 2

Each case is a real SimEnv job (benchmarks.faults' job helpers): 4 text-tasks sites, all-MiniLM-L6-v2 + LoRA, torch
threads 1. Cases: no filter; NVFlare's ``PercentilePrivacy`` attached directly to the FULL weights FedBip sends (what
a user gets by adding NVFlare's filter as is); ``PercentilePrivacy`` / ``SVTPrivacy`` (NVFlare defaults) and the
Gaussian mechanism on the task vector through :func:`fedbip_nvflare.client.privacy.add_task_vector_privacy`.
Writes DIR/privacy.json and DIR/privacy.md: mean final accuracy of the personalized models, mean accuracy of the
round-0 local models, the mean off-diagonal cosine and self weight of the last round.
"""

import argparse
import os
import shutil
import statistics
import sys
import time
from typing import Any, Dict, Optional, Sequence

from benchmarks.faults import JobSpec, run_job
from benchmarks.quality import positive_int
from benchmarks.reporting import command_line, provenance, write_report

JSON_FILE = "privacy.json"
MARKDOWN_FILE = "privacy.md"
CASES: Dict[str, Dict[str, Any]] = {
    "none": {},
    "percentile-on-weights": {
        "privacy": "percentile",
        "privacy_options": {"percentile": 10, "gamma": 0.01},
        "privacy_on_weights": True,
    },
    "percentile": {"privacy": "percentile", "privacy_options": {"percentile": 10, "gamma": 0.01}},
    "svt": {"privacy": "svt", "privacy_options": {}},
    "gaussian-0.001": {
        "privacy": "gaussian",
        "privacy_options": {"clip_norm": 0.5, "noise_multiplier": 0.001, "seed": 0},
    },
    "gaussian-1": {"privacy": "gaussian", "privacy_options": {"clip_norm": 0.5, "noise_multiplier": 1.0, "seed": 0}},
}
DESCRIPTIONS = {
    "none": "no privacy filter",
    "percentile-on-weights": "NVFlare PercentilePrivacy(10, gamma 0.01) on the FULL weights (attached as is)",
    "percentile": "NVFlare PercentilePrivacy(10, gamma 0.01) on τ (TaskVectorPrivacy)",
    "svt": "NVFlare SVTPrivacy (defaults) on τ (TaskVectorPrivacy)",
    "gaussian-0.001": "τ clipped to L2 0.5 + N(0, (0.001·0.5)²) per value (TaskVectorPrivacy)",
    "gaussian-1": "τ clipped to L2 0.5 + N(0, 0.5²) per value: σ = 1 (TaskVectorPrivacy)",
}


def summarize(files) -> Dict[str, Any]:
    """Mean accuracies and the last round's similarity/weight summary of a finished job."""
    results, records = files.results(), files.rounds()
    clients = results.get("clients", {})
    final = [c["accuracy"] for c in clients.values() if "accuracy" in c]
    before = [c["accuracy_before"] for c in clients.values() if "accuracy_before" in c]
    out: Dict[str, Any] = {
        "accuracy": statistics.fmean(final) if final else None,
        "accuracy_before": statistics.fmean(before) if before else None,
        "per_site": {s: c.get("accuracy") for s, c in clients.items()},
        "rounds": len(records),
        "rejected": sum(len(r.get("rejected", {})) for r in records.values()),
    }
    if records:
        last = records[max(records)]
        s, w = last.get("similarity"), last.get("weights")
        if isinstance(s, list) and isinstance(w, list):
            n = len(s)
            out["mean_cosine"] = statistics.fmean(s[i][j] for i in range(n) for j in range(n) if i != j)
            out["mean_self_weight"] = statistics.fmean(w[i][i] for i in range(n))
    return out


def _fmt(value: Optional[float], pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def markdown(info: Dict[str, Any]) -> str:
    """The table, one line per case."""
    s = info["settings"]
    lines = [
        "# Privacy filters on FedBip's results: accuracy cost",
        "",
        f"`{info['command']}` (commit {info['git_commit']}, {info['wall_time_s']:.0f} s). text-tasks, "
        f"{len(s['sites'])} sites, {s['rounds']} rounds, {s['n_train']} training / {s['n_test']} test examples per "
        f"site, max_length {s['max_length']}, 1 seed: differences of a few points are noise.",
        "",
        "| case | filter | mean accuracy | Δ vs none | round-0 local accuracy | last-round mean cosine | "
        "mean self weight | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = info["cases"].get("none", {}).get("accuracy")
    for name, case in info["cases"].items():
        acc = case.get("accuracy")
        delta = f"{100 * (acc - base):+.1f}" if acc is not None and base is not None else "-"
        lines.append(
            f"| {name} | {DESCRIPTIONS.get(name, name)} | {_fmt(acc, True)} | {delta} | "
            f"{_fmt(case.get('accuracy_before'), True)} | {_fmt(case.get('mean_cosine'))} | "
            f"{_fmt(case.get('mean_self_weight'))} | {case.get('wall_s', 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


def run(
    output: str,
    work: str,
    cases: Sequence[str] = tuple(CASES),
    n_train: int = 64,
    rounds: int = 3,
    max_length: int = 64,
    command: str = "",
) -> Dict[str, Any]:
    """Runs every case's job and writes DIR/privacy.{json,md}; returns the information written."""
    start = time.perf_counter()
    settings = {"sites": ["site-1", "site-2", "site-3", "site-4"], "rounds": rounds, "n_train": n_train}
    settings.update({"n_test": n_train, "max_length": max_length})
    info: Dict[str, Any] = {**provenance(command), "settings": settings, "cases": {}}
    for name in cases:
        spec = JobSpec(
            name=name.replace("-", "_").replace(".", "_"),
            workspace=os.path.join(work, name),
            sites=settings["sites"],
            rounds=rounds,
            min_clients=len(settings["sites"]),
            train_timeout=0,
            validate_timeout=0,
            data={"suite": "text-tasks", "n_train": n_train, "n_test": n_train, "seed": 0},
            max_length=max_length,
            **CASES[name],
        )
        files = run_job(spec, timeout=1200)
        info["cases"][name] = {**summarize(files), "wall_s": files.wall_s, "returncode": files.returncode}
        info["cases"][name]["options"] = CASES[name]
    info["wall_time_s"] = time.perf_counter() - start
    write_report(output, JSON_FILE, MARKDOWN_FILE, info, markdown(info))
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark and prints the table; 1 if a job produced no results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="output folder DIR")
    p.add_argument("--work", default=None, help="jobs' workspaces (default: DIR/privacy-work, removed after)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--n-train", type=positive_int, default=64, help="training (and test) examples per site")
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--max-length", type=positive_int, default=64)
    args = p.parse_args(argv)
    output = os.path.abspath(args.output)
    work = os.path.abspath(args.work or os.path.join(output, "privacy-work"))
    command = command_line("benchmarks.privacy", argv)
    info = run(output, work, args.cases, args.n_train, args.rounds, args.max_length, command)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(info))
    return 0 if all(c.get("accuracy") is not None for c in info["cases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
