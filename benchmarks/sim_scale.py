"""Many clients on few simulator threads: wall time and memory of a real FedBip job (issue 22).

NVFlare 2.9's simulator with fewer threads than clients starts a process per task, so N clients need only as many
model copies as threads. This runs ``jobs/fedbip_text/job.py`` for each (clients, threads) pair, samples the memory of
every process of the job (found by its workspace folder) once a second (PSS, so pages shared between processes count
once) and records wall time, peak memory, the peak number of processes and how many clients returned a result.

    python -m benchmarks.sim_scale --runs 8x8 8x2 32x2 --output benchmarks/results/performance/sim_scale
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from benchmarks.processes import pids_running_from
from benchmarks.reporting import REPO, command_line, machine_text, provenance, write_report

JOB = os.path.join(REPO, "jobs", "fedbip_text", "job.py")
MIB = 1024 * 1024


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def parse_run(text: str) -> Tuple[int, int]:
    """``"32x2"`` → (32 clients, 2 threads)."""
    try:
        clients, threads = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a run is CLIENTSxTHREADS, e.g. 32x2; got {text!r}") from None
    if clients < 1 or not 1 <= threads <= clients:
        raise argparse.ArgumentTypeError(f"need 1 <= threads <= clients, got {text!r}")
    return clients, threads


def run_one(clients: int, threads: int, args: argparse.Namespace, workspace: str) -> Dict[str, Any]:
    """Runs the job once and samples its process tree's memory; returns the run's record."""
    out = os.path.join(workspace, f"{clients}x{threads}")
    cmd = [
        sys.executable,
        JOB,
        "--num-clients",
        str(clients),
        "--threads",
        str(threads),
        "--num-rounds",
        str(args.num_rounds),
        "--max-examples",
        str(args.max_examples),
        "--test-examples",
        str(args.test_examples),
        "--max-length",
        str(args.max_length),
        "--torch-threads",
        "1",
        "--suite",
        args.suite,
        "--workspace",
        out,
        "--output",
        os.path.join(out, "results"),
    ]
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    peak, peak_procs, samples = 0, 0, 0
    start = time.monotonic()
    with open(os.path.join(workspace, f"{clients}x{threads}.log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            pids = pids_running_from(out)  # the job script, the simulator and every client process
            peak = max(peak, sum(pss_bytes(p) for p in pids))
            peak_procs = max(peak_procs, len(pids))
            samples += 1
            time.sleep(1.0)
    wall = time.monotonic() - start
    results_path = os.path.join(out, "results", "results.json")
    returned = 0
    if os.path.exists(results_path):
        with open(results_path) as f:
            returned = sum(1 for c in json.load(f).get("clients", {}).values() if c.get("accuracy") is not None)
    return {
        "clients": clients,
        "threads": threads,
        "exit_code": proc.returncode,
        "completed": proc.returncode == 0 and returned == clients,
        "clients_with_result": returned,
        "wall_time_s": round(wall, 1),
        "peak_pss_mib": round(peak / MIB, 1),
        "peak_processes": peak_procs,
        "memory_samples": samples,
    }


def markdown(info: Mapping[str, Any]) -> str:
    """The report page of :func:`main`'s record."""
    lines = [
        "# Many clients on few simulator threads",
        "",
        f"Command: `{info['command']}` (commit `{info['git_commit']}`, {machine_text(info['machine'])}).",
        f"Job: `jobs/fedbip_text/job.py`, suite {info['config']['suite']}, {info['config']['num_rounds']} rounds, "
        f"{info['config']['max_examples']} train / {info['config']['test_examples']} test examples per client, "
        "all-MiniLM-L6-v2 + LoRA, one torch thread per client. Memory: the peak, over 1 s samples, of the summed "
        "PSS of the job's whole process tree (the job script, the simulator and every client process).",
        "",
        "| clients | threads | completed | clients with a result | wall time (s) | peak memory (MiB) | "
        "peak processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in info["runs"]:
        done = "yes" if r["completed"] else f"NO (exit {r['exit_code']})"
        lines.append(
            f"| {r['clients']} | {r['threads']} | {done} | {r['clients_with_result']} | {r['wall_time_s']:.0f} | "
            f"{r['peak_pss_mib']:.0f} | {r['peak_processes']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", type=parse_run, default=[(8, 8), (8, 2), (32, 2)], help="CLIENTSxTHREADS")
    p.add_argument("--suite", default="text-tasks")
    p.add_argument("--num-rounds", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=16)
    p.add_argument("--test-examples", type=int, default=16)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--workspace", default=None, help="simulator workspaces and logs (default: a temporary folder)")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    workspace = args.workspace or tempfile.mkdtemp(prefix="fedbip_sim_scale_")
    os.makedirs(workspace, exist_ok=True)
    info: Dict[str, Any] = provenance(command_line("benchmarks.sim_scale", argv))
    info["config"] = {k: getattr(args, k) for k in ("suite", "num_rounds", "max_examples", "test_examples")}
    info["config"]["max_length"] = args.max_length
    info["runs"] = []
    for clients, threads in args.runs:
        info["runs"].append(run_one(clients, threads, args, workspace))
        print(json.dumps(info["runs"][-1]), flush=True)
    print(write_report(args.output, "sim_scale.json", "sim_scale.md", info, markdown(info)))
    return 0 if all(r["completed"] for r in info["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
