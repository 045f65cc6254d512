"""The quality benchmark's report: ``DIR/summary.md`` and its plots, from the per-run results in DIR.

Reads ``DIR/benchmark.json`` (written by ``benchmarks.quality``: command, configuration, run records) and
``DIR/<method>/seed<k>/results.json`` + ``rounds.jsonl``. Without ``benchmark.json`` every results.json found
under DIR counts as a successful run.
"""

import glob
import json
import math
import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.data import site_list
from fedbip_nvflare.results import read_round_matrices

SUMMARY_FILE = "summary.md"
ROUNDS_PLOT = "accuracy_by_round.png"
LOCAL = "local"
FEDAMP = "fedamp"
# ROUGE F1 scores a causal LM's results may carry, with their table titles (rouge_l alone in older runs).
ROUGE_METRICS = (("rouge1", "ROUGE-1 F1"), ("rouge_lsum", "ROUGE-Lsum F1"), ("rouge_l", "ROUGE-L F1"))
# Methods whose weight matrix is fixed by design (identity, ground-truth groups): nothing to plot.
FIXED_WEIGHTS = ("probe", "zero-shot", "local", "local-reseeded", "oracle-groups", "fedsa-lora", "fedavg-ft")

Runs = Dict[str, Dict[int, Dict[str, Any]]]  # {method: {seed: results}}


def read_benchmark(output: str) -> Dict[str, Any]:
    """``DIR/benchmark.json``, or a record rebuilt from the results.json files under DIR if it is missing."""
    path = os.path.join(output, "benchmark.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    runs = []
    for p in sorted(glob.glob(os.path.join(output, "*", "seed*", K.RESULTS_FILE))):
        seed_dir = os.path.dirname(p)
        with open(p) as f:
            wall = json.load(f).get("wall_time_s")
        method, seed = os.path.basename(os.path.dirname(seed_dir)), int(os.path.basename(seed_dir)[4:])
        runs.append({"method": method, "seed": seed, "status": "ok", "wall_time_s": wall, "error": None})
    methods = list(dict.fromkeys(r["method"] for r in runs))
    return {"command": "(unknown: no benchmark.json)", "methods": methods, "runs": runs}


def load_runs(output: str, records: Sequence[Mapping[str, Any]]) -> Runs:
    """The results of the successful runs among ``records``: ``{method: {seed: results.json content}}``."""
    runs: Runs = {}
    for r in records:
        path = os.path.join(output, r["method"], f"seed{r['seed']}", K.RESULTS_FILE)
        if r["status"] == "ok" and os.path.exists(path):
            with open(path) as f:
                runs.setdefault(r["method"], {})[int(r["seed"])] = json.load(f)
    return runs


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def fmt(values: Sequence[float], signed: bool = False) -> str:
    """``mean ± std`` of fractions, in % with one decimal ("-" when empty; no ± for a single value)."""
    if not values:
        return "-"
    mean = f"{100 * statistics.mean(values):{'+' if signed else ''}.1f}"
    return mean if len(values) == 1 else f"{mean} ± {100 * statistics.stdev(values):.1f}"


def client_columns(runs: Runs) -> List[Tuple[str, str]]:
    """``[(site, task)]`` over all runs, in the order ``load_results`` gives (site-1, site-2, ...)."""
    columns: Dict[str, str] = {}
    for by_seed in runs.values():
        for results in by_seed.values():
            for site, info in results["clients"].items():
                columns.setdefault(site, str(info.get("task")))
    return list(columns.items())


def _accuracies(results: Mapping[str, Any], metric: str = "accuracy") -> Dict[str, float]:
    return {s: float(c[metric]) for s, c in results["clients"].items() if _finite(c.get(metric))}


def accuracy_rows(runs: Runs, methods: Sequence[str], metric: str = "accuracy") -> List[List[str]]:
    """Rows of the final-accuracy table: method, each client, mean over clients, mean and worst gap to Local.

    Every cell is mean ± std over seeds (in %). The gaps are paired by seed and client: per seed,
    ``acc_m(c) − acc_local(c)`` over the clients both have, averaged (mean gap) or minimised (worst client).
    ``metric``: the clients' results key tabulated (``"accuracy"``: the primary metric; e.g. ``"rouge_l"``).
    """
    columns = [site for site, _ in client_columns(runs)]
    local = {seed: _accuracies(r, metric) for seed, r in runs.get(LOCAL, {}).items()}
    rows = []
    for method in methods:
        by_seed = {seed: _accuracies(r, metric) for seed, r in runs.get(method, {}).items()}
        cells = [fmt([acc[s] for acc in by_seed.values() if s in acc]) for s in columns]
        means = [_mean(list(acc.values())) for acc in by_seed.values() if acc]
        gaps = [
            [acc[s] - local[seed][s] for s in acc if s in local[seed]] for seed, acc in by_seed.items() if seed in local
        ]
        gaps = [g for g in gaps if g]
        has_gap = method != LOCAL and gaps
        rows.append(
            [method, *cells, fmt(means)]
            + ([fmt([_mean(g) for g in gaps], True), fmt([min(g) for g in gaps], True)] if has_gap else ["-", "-"])
        )
    return rows


def paired_gaps(runs: Runs, method: str, reference: str, metric: str) -> List[List[float]]:
    """Per seed both methods ran: ``metric`` of ``method`` minus ``reference``'s, for each client both have."""
    ref = {seed: _accuracies(r, metric) for seed, r in runs.get(reference, {}).items()}
    gaps = []
    for seed, results in runs.get(method, {}).items():
        acc = _accuracies(results, metric)
        if seed in ref:
            gaps.append([acc[s] - ref[seed][s] for s in acc if s in ref[seed]])
    return [g for g in gaps if g]


def headline_rows(runs: Runs, methods: Sequence[str], shown: Sequence[str], compared: Sequence[str]) -> List[List[str]]:
    """Rows of the mean-over-tasks table (mean ± std over seeds, in %).

    Per method: each ``shown`` metric's mean over clients; for each ``compared`` metric the paired mean gap to
    Local and to FedAMP ("-" for the reference itself or when it did not run); the worst client's gap to Local
    on ``compared[0]``.
    """
    rows = []
    for method in methods:
        row = [method]
        for metric in shown:
            means = [_mean(list(a.values())) for a in (_accuracies(r, metric) for r in runs[method].values()) if a]
            row.append(fmt(means))
        for metric in compared:
            for reference in (LOCAL, FEDAMP):
                gaps = paired_gaps(runs, method, reference, metric) if method != reference else []
                row.append(fmt([_mean(g) for g in gaps], True))
        worst = paired_gaps(runs, method, LOCAL, compared[0]) if method != LOCAL else []
        rows.append(row + [fmt([min(g) for g in worst], True)])
    return rows


def records_results(runs: Runs) -> List[Mapping[str, Any]]:
    """Every run's results, flattened over methods and seeds."""
    return [r for by_seed in runs.values() for r in by_seed.values()]


def accuracy_curves(runs: Runs) -> Dict[str, Dict[str, List[float]]]:
    """Mean accuracy over clients by round, per method: ``{method: {"x", "mean", "std"}}`` (fractions).

    Point r (0 ≤ r < R) is the accuracy of the model each client received at the start of round r
    (``history`` entry ``accuracy_received``; round 0 is the initial model with an untrained head); point R is
    the final personalized model's accuracy. Mean over clients per seed, then mean and std over seeds.
    """
    curves = {}
    for method, by_seed in runs.items():
        per_seed = []
        for results in by_seed.values():
            rounds = int(results.get("num_rounds", 0))
            received: List[List[float]] = [[] for _ in range(rounds)]
            for info in results["clients"].values():
                for h in info.get("history", []):
                    if 0 <= int(h.get("round", -1)) < rounds and _finite(h.get(K.ACCURACY_RECEIVED)):
                        received[int(h["round"])].append(float(h[K.ACCURACY_RECEIVED]))
            per_seed.append([_mean(v) for v in received] + [_mean(list(_accuracies(results).values()))])
        points = [[v for v in column if v is not None] for column in zip(*per_seed)]
        curves[method] = {
            "x": list(range(len(points))),
            "mean": [statistics.mean(p) if p else float("nan") for p in points],
            "std": [statistics.stdev(p) if len(p) > 1 else 0.0 for p in points],
        }
    return curves


def weight_matrices(rounds_path: str) -> Optional[Tuple[List[str], Any, Any, int, int]]:
    """The first and last aggregated rounds' weight matrices in a run's ``rounds.jsonl``.

    Layer-wise weights (``{group: matrix}``) are averaged over groups, unless a model-level ``"model"``
    entry is present, which is used instead.

    Returns:
        ``(clients, first, last, first_round, last_round)`` with ``[N, N]`` numpy arrays (rows: receiving
        client), or None if no round recorded weights.
    """
    rounds = _round_weights(rounds_path)
    if not rounds:
        return None
    (r0, clients, first), (r1, _, last) = rounds[0], rounds[-1]
    return clients, first, last, r0, r1


def _round_weights(rounds_path: str) -> List[Tuple[int, List[str], Any]]:
    """Every aggregated round's ``(round, clients, [N, N] weight matrix)`` in a run's ``rounds.jsonl``."""
    return read_round_matrices(rounds_path, "weights")


def partner_weights(output: str, runs: Runs, methods: Sequence[str], groups: Mapping[str, str]) -> List[List[str]]:
    """Per method and round: how much weight clients put on themselves, their group partners and the others.

    Each client's row of the weight matrix is split into its self weight, the summed weight on the other
    members of its ground-truth group, and the summed weight on everyone else; these are averaged over clients
    and seeds. "top = partner" is the share of clients whose largest non-self weight goes to a partner.

    Returns:
        Table rows ``[method, round, self, partners, others, top = partner]`` (weights in %).
    """
    rows = []
    for method in methods:
        if method in FIXED_WEIGHTS:
            continue
        by_round: Dict[int, List[Tuple[float, float, float, float]]] = {}
        for seed in sorted(runs.get(method, {})):
            for rnd, clients, w in _round_weights(os.path.join(output, method, f"seed{seed}", K.ROUNDS_FILE)):
                for i, c in enumerate(clients):
                    partners = [k for k, other in enumerate(clients) if k != i and groups.get(other) == groups.get(c)]
                    others = [k for k in range(len(clients)) if k != i and k not in partners]
                    if not partners:
                        continue
                    off = [(w[i, k], k) for k in range(len(clients)) if k != i]
                    top = max(off)[1] in partners if off and max(off)[0] > 0 else False
                    by_round.setdefault(rnd, []).append(
                        (w[i, i], sum(w[i, k] for k in partners), sum(w[i, k] for k in others), float(top))
                    )
        for rnd in sorted(by_round):
            cols = list(zip(*by_round[rnd]))
            rows.append([method, rnd, *[f"{100 * statistics.mean(c):.1f}" for c in cols]])
    return rows


def conflict_weights(output: str, runs: Runs, methods: Sequence[str], conflicting: Sequence[str]) -> List[List[str]]:
    """Per method and round: the weight honest clients put on the conflicting ones, and the reverse.

    Returns:
        Table rows ``[method, round, honest → conflicting, conflicting → honest]``: each client's summed
        weight on the other side, averaged over the clients of its side and over seeds, in %.
    """
    rows = []
    bad = set(conflicting)
    for method in methods:
        if method in FIXED_WEIGHTS:
            continue
        by_round: Dict[int, Tuple[List[float], List[float]]] = {}
        for seed in sorted(runs.get(method, {})):
            for rnd, clients, w in _round_weights(os.path.join(output, method, f"seed{seed}", K.ROUNDS_FILE)):
                honest_to, bad_to = by_round.setdefault(rnd, ([], []))
                for i, c in enumerate(clients):
                    other_side = [k for k, o in enumerate(clients) if (o in bad) != (c in bad)]
                    (bad_to if c in bad else honest_to).append(sum(w[i, k] for k in other_side))
        for rnd in sorted(by_round):
            rows.append([method, rnd, *[f"{100 * statistics.mean(v):.1f}" if v else "-" for v in by_round[rnd]]])
    return rows


def invocation_lines(info: Mapping[str, Any]) -> List[str]:
    """Where a benchmark's runs came from when it took several invocations: one line each, and a warning line when
    they ran at different commits (or none when there was a single invocation)."""
    invocations = info.get("invocations") or []
    if len(invocations) < 2:
        return []
    lines = ["Invocations (the runs of this folder were made by several commands):", ""]
    for inv in invocations:
        lines.append(
            f"- `{inv.get('command')}` at commit `{inv.get('git_commit')}`: methods "
            f"{', '.join(inv.get('methods') or [])}; seeds {inv.get('seeds')}; {inv.get('wall_time_s', '?')} s"
        )
    commits = sorted({str(inv.get("git_commit")) for inv in invocations})
    if len(commits) > 1:
        lines += ["", f"**Runs from {len(commits)} different commits: {', '.join(commits)}.**"]
    return lines + [""]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def write_summary(output: str) -> str:
    """Writes ``DIR/summary.md`` and the PNG plots; returns the text to print (tables and failures).

    Args:
        output: The benchmark's output folder DIR.

    Returns:
        The final-accuracy table, the run table and the failed runs, as Markdown.
    """
    from fedbip_nvflare import plots

    info = read_benchmark(output)
    records = info.get("runs", [])
    runs = load_runs(output, records)
    methods = [m for m in info.get("methods", []) if m in runs] + [m for m in runs if m not in info.get("methods", [])]
    spec = info.get("spec", {})
    seeds = sorted({int(r["seed"]) for r in records})

    header = ["method", *[f"{site} ({task})" for site, task in client_columns(runs)], "mean"]
    header += ["Δ mean vs local", "worst-client Δ vs local"]
    acc_table = markdown_table(header, accuracy_rows(runs, methods))
    # Generated answers (causal LMs): accuracy is exact match; ROUGE-L F1 gives partial credit.
    metric = "exact match" if spec.get("modality") == "causal-lm" else "accuracy"
    scored = {k for r in records_results(runs) for c in r["clients"].values() for k in c}
    rouge_sections = []
    for key, title in ROUGE_METRICS:
        if key in scored:
            table = markdown_table(header, accuracy_rows(runs, methods, key))
            rouge_sections += [
                f"## Final {title} (%), mean ± std over seeds",
                "",
                "Of the same responses.",
                "",
                table,
                "",
            ]
    headline = [k for k in ("rouge1", "rouge_lsum") if k in scored]
    if headline:
        names = {"rouge1": "ROUGE-1", "rouge_lsum": "ROUGE-Lsum"}
        head_header = ["method", *[names[k] for k in headline], "exact match"]
        head_header += [f"Δ {names[k]} vs {ref}" for k in headline for ref in (LOCAL, FEDAMP)]
        head_header += [f"worst-client Δ {names[headline[0]]} vs local"]
        rows = headline_rows(runs, methods, [*headline, "accuracy"], headline)
        rouge_sections = [
            "## Mean over tasks (%), mean ± std over seeds",
            "",
            "The FedBip paper's group scores each task by ROUGE (rouge1, rougeLsum of the T5 metrics over "
            "rouge-score) and averages over tasks; Δ columns are paired by seed and client.",
            "",
            markdown_table(head_header, rows),
            "",
            *rouge_sections,
        ]
    run_rows = [[r["method"], r["seed"], r["status"], r.get("wall_time_s", "-")] for r in records]
    run_table = markdown_table(["method", "seed", "status", "wall time (s)"], run_rows)
    failed = [f"- {r['method']} seed {r['seed']}: {r['error']}" for r in records if r["status"] != "ok"]

    curves = accuracy_curves(runs)
    rounds = max((len(c["x"]) for c in curves.values()), default=0)
    curve_rows = [
        [m, *[fmt([]) if math.isnan(v) else f"{100 * v:.1f}" for v in curves[m]["mean"]]]
        + [""] * (rounds - len(curves[m]["x"]))
        for m in methods
    ]
    curve_header = ["method", *[f"round {r}" for r in range(rounds - 1)], "final"]

    images = []
    if curves:
        plots.plot_accuracy_by_round(
            {m: curves[m] for m in methods}, os.path.join(output, ROUNDS_PLOT), f"{spec.get('suite')}", metric
        )
        images.append((f"Mean {metric} over clients by round", ROUNDS_PLOT))
    for method in methods:
        if method in FIXED_WEIGHTS:
            continue
        seed = min(runs[method])
        found = weight_matrices(os.path.join(output, method, f"seed{seed}", K.ROUNDS_FILE))
        if found is None:
            continue
        clients, first, last, r0, r1 = found
        groups = info.get("groups") or {}
        labels = plots.site_labels(clients, dict(client_columns(runs)), groups)
        name = f"weights_{method}.png"
        plots.plot_weight_matrices(
            first,
            last,
            labels,
            os.path.join(output, name),
            f"{method} aggregation weights (seed {seed})",
            (r0, r1),
            partners=plots.partner_cells(clients, groups),
        )
        images.append((f"{method}: weight matrix p_ik at the first and last round (seed {seed})", name))

    groups = info.get("groups") or {}
    partner_rows = partner_weights(output, runs, methods, groups) if groups else []
    conflicting = site_list(info.get("data", {}).get("conflict_sites"))
    conflict_rows = conflict_weights(output, runs, methods, conflicting) if conflicting else []

    config = ", ".join(f"{k}={v}" for k, v in spec.items())
    total = info.get("wall_time_s")
    text = [
        f"# Quality benchmark: {spec.get('suite', '?')}",
        "",
        f"Command: `{info.get('command')}`"
        + (f" (at commit `{info['git_commit']}`)" if info.get("git_commit") else ""),
        "",
        *invocation_lines(info),
        f"Configuration: {config or '?'}; seeds {seeds}; data config `{json.dumps(info.get('data', {}))}`.",
        "",
        f"## Final {metric} (%), mean ± std over seeds",
        "",
        "Δ columns: paired by seed and client against Local; worst-client is the minimum over clients.",
        "",
        acc_table,
        "",
        *rouge_sections,
        f"## Mean {metric} over clients by round (%)",
        "",
        "Round r: the model each client received at the start of round r (round 0: the initial model, with an "
        "untrained head where the model has one); final: the personalized model after the last round"
        + (
            f". Rounds use a fixed subset of {spec['round_eval_examples']} test examples per client, final uses all."
            if spec.get("round_eval_examples")
            else "."
        ),
        "",
        markdown_table(curve_header, curve_rows) if curve_rows else "(no results)",
        "",
    ]
    if partner_rows:
        text += [
            "## Weight on the same-group partner(s) by round (%)",
            "",
            "Rows of the aggregation weight matrix split into self, the client's ground-truth group partners and "
            "everyone else (mean over clients and seeds; layer-wise weights averaged over groups); top = partner: "
            "share of clients whose largest non-self weight goes to a partner.",
            "",
            markdown_table(["method", "round", "self", "partners", "others", "top = partner"], partner_rows),
            "",
        ]
    if conflict_rows:
        text += [
            f"## Weight between honest clients and the conflicting ones ({', '.join(conflicting)}) by round (%)",
            "",
            "Each client's summed weight on the clients of the other side, mean over the clients of its side and "
            "seeds (the conflicting clients label every text with the next class).",
            "",
            markdown_table(["method", "round", "honest → conflicting", "conflicting → honest"], conflict_rows),
            "",
        ]
    text += [
        "## Runs",
        "",
        run_table,
        "",
        f"Total wall time: {total} s." if total is not None else "",
    ]
    if failed:
        text += ["", "## Failed runs", "", *failed]
    text += ["", "## Plots", ""] + [f"{title}\n\n![{title}]({name})\n" for title, name in images]
    with open(os.path.join(output, SUMMARY_FILE), "w") as f:
        f.write("\n".join(text).rstrip() + "\n")
    printed = [acc_table, "", run_table] + (["", "Failed runs:", *failed] if failed else [])
    return "\n".join(printed + ["", f"summary: {os.path.join(output, SUMMARY_FILE)}"])
