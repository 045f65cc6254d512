"""``fedbip report``: the per-client table and PNG plots of every FedBip run found under a folder."""

import glob
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.results import format_table, normalize_results, read_round_matrices, run_failure

REPORT_DIR = "report"


@dataclass
class Run:
    """One run's results (``results.json`` schema) and where its ``rounds.jsonl`` is (None: not written)."""

    label: str
    results: Dict[str, Any]
    rounds_path: Optional[str]


def _label(root: str, results_path: str, method: str) -> str:
    seed = re.search(r"seed(\d+)", os.path.relpath(results_path, root))
    return f"{method}-seed{seed.group(1)}" if seed else method


def find_runs(root: str) -> List[Run]:
    """Every distinct run under ``root``: a job workspace, a job's result folder or a benchmark output folder.

    A run is a ``results.json`` with per-client results; copies of the same run (the server's and the job's
    ``--output`` copy) count once, preferring the copy with a ``rounds.jsonl`` beside it.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no results (names what was searched for).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a folder: give a job workspace, result folder or benchmark folder")
    found: Dict[Tuple, Run] = {}
    for path in sorted(glob.glob(os.path.join(root, "**", K.RESULTS_FILE), recursive=True)):
        if f"{os.sep}{REPORT_DIR}{os.sep}" in path:
            continue
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("clients"), dict) or "method" not in raw:
            continue
        rounds = os.path.join(os.path.dirname(path), K.ROUNDS_FILE)
        rounds_path = rounds if os.path.exists(rounds) else None
        key = (raw["method"], tuple(sorted((c, str(v.get("accuracy"))) for c, v in raw["clients"].items())))
        if key in found and (found[key].rounds_path or not rounds_path):
            continue
        found[key] = Run(_label(root, path, raw["method"]), normalize_results(raw), rounds_path)
    if not found:
        raise FileNotFoundError(
            f"no {K.RESULTS_FILE} with per-client results under {root}: the job did not finish, or this is not "
            "its workspace (after `make demo`: workspace/demo)"
        )
    labels: Dict[str, int] = {}
    runs = sorted(found.values(), key=lambda r: r.label)
    for run in runs:  # distinct labels for distinct runs of one method
        labels[run.label] = labels.get(run.label, 0) + 1
        if labels[run.label] > 1:
            run.label = f"{run.label}-{labels[run.label]}"
    return runs


def run_failures(root: str) -> List[str]:
    """``"<label>: <reason>"`` for every run under ``root`` that failed (see ``results.run_failure``).

    Raises:
        FileNotFoundError: As :func:`find_runs`.
    """
    return [f"{run.label}: {reason}" for run in find_runs(root) if (reason := run_failure(run.results))]


def client_curves(results: Dict[str, Any]) -> Dict[str, List[float]]:
    """Per client: the accuracy of the model it received at each round's start, then its final accuracy."""
    rounds = int(results.get("num_rounds") or 0)
    curves = {}
    for client, info in results["clients"].items():
        values = [float("nan")] * rounds
        for h in info.get("history") or []:
            r = int(h.get("round", -1))
            if 0 <= r < rounds and h.get(K.ACCURACY_RECEIVED) is not None:
                values[r] = float(h[K.ACCURACY_RECEIVED])
        final = info.get("accuracy")
        curves[client] = values + [float(final) if final is not None else float("nan")]
    return curves


def mean_accuracy(results: Dict[str, Any]) -> Optional[float]:
    """Mean final accuracy over the clients that report one."""
    values = [float(c["accuracy"]) for c in results["clients"].values() if c.get("accuracy") is not None]
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _plot_run(run: Run, output: str) -> List[str]:
    from fedbip_nvflare import plots

    written = []
    path = os.path.join(output, f"{run.label}_accuracy_by_round.png")
    plots.plot_client_curves(client_curves(run.results), path, f"{run.label}: accuracy by round")
    written.append(path)
    if run.rounds_path is None:
        return written
    for key, value_range, name in (("similarity", (-1.0, 1.0), "S_ik (cosine)"), ("weights", (0.0, 1.0), "p_ik")):
        matrices = read_round_matrices(run.rounds_path, key)
        if not matrices:
            continue
        (r0, clients, first), (r1, _, last) = matrices[0], matrices[-1]
        path = os.path.join(output, f"{run.label}_{key}.png")
        title = f"{run.label}: {'similarity' if key == 'similarity' else 'aggregation weights'}"
        tasks = {c: info.get("task") for c, info in run.results["clients"].items()}
        groups = (run.results.get("options") or {}).get("groups")
        labels = plots.site_labels(clients, tasks, groups)
        partners = plots.partner_cells(clients, groups)
        plots.plot_weight_matrices(first, last, labels, path, title, (r0, r1), value_range, name, partners)
        written.append(path)
    return written


def write_report(root: str, output: Optional[str] = None) -> str:
    """Prints-ready text (per-run tables, method comparison) and PNG plots for every run under ``root``.

    Writes into ``output`` (default ``<root>/report``): per run ``<label>_accuracy_by_round.png`` and, where the
    server logged them, ``<label>_similarity.png`` and ``<label>_weights.png`` (first and last round); with
    several methods, ``methods.png`` (mean accuracy per method, averaged over its runs).

    Returns:
        The text to print: each run's per-client table, the method comparison, and the files written.
    """
    from fedbip_nvflare import plots

    runs = find_runs(root)
    output = output or os.path.join(root, REPORT_DIR)
    os.makedirs(output, exist_ok=True)
    lines, written = [], []
    for run in runs:
        lines += [f"== {run.label} ({run.results.get('num_rounds')} rounds)", format_table(run.results), ""]
        written += _plot_run(run, output)
    by_method: Dict[str, List[float]] = {}
    for run in runs:
        mean = mean_accuracy(run.results)
        if mean is not None:
            by_method.setdefault(str(run.results["method"]), []).append(mean)
    if len(by_method) > 1:
        means = {m: sum(v) / len(v) for m, v in by_method.items()}
        lines.append("method comparison (mean final accuracy over clients, averaged over runs)")
        lines += [f"  {m:<24} {100 * v:6.2f}  ({len(by_method[m])} run(s))" for m, v in means.items()]
        lines.append("")
        path = os.path.join(output, "methods.png")
        plots.plot_method_comparison(means, path, "Mean accuracy by method")
        written.append(path)
    lines.append(f"plots ({len(written)}) in {output}:")
    lines += [f"  {os.path.basename(p)}" for p in written]
    return "\n".join(lines)
