"""The performance page, generated from the committed benchmark JSON (never typed by hand).

python -m benchmarks.performance_page --write benchmarks/results/performance.md --readme README.md

Reads ``aggregation.json``, ``end_to_end/end_to_end.json``, ``throughput/throughput.json``, ``sim_scale/sim_scale.json``
and ``gpu-h200/*.json``
under ``--results`` (default ``benchmarks/results/performance``) and prints (or writes) the page: every file's
command, commit and machine, flagged "untraceable: rerun" where its commit is missing, unknown here, or does not
hold the version of the script that made it (the script as of the commit that committed the file); the targets
with the figure measured and whether it is met; what limits each aggregation target, from the same numbers; then
the tables behind them. Every figure names its JSON file.
Times with repeats are given as median (min–max); streamed "all N" times measured on fewer clients are labelled
extrapolated. ``--readme`` replaces the text between ``<!-- perf-table:begin -->`` and ``<!-- perf-table:end -->``
with the targets table.
"""

import argparse
import glob
import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmarks.paper_table import write_between_markers
from benchmarks.reporting import REPO, command_line, machine_text

RESULTS = os.path.join("benchmarks", "results", "performance")
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
# The targets (issue 23): the grid, and the bound of each ratio.
GRID_CLIENTS, GRID_PARAMS, GRID_DTYPES = (8, 32, 128), (10**6, 10**7), ("fp32", "bf16")
FLOOR_BOUND, LAYER_BOUND, PAIRWISE_BOUND, PAIRWISE_CLIENTS, ROUND_BOUND = 2.0, 1.5, 20.0, 32, 1.15
# Which script wrote a JSON file, by the start of its name.
SCRIPTS = {
    "aggregation": "benchmarks/aggregation.py",
    "end_to_end": "benchmarks/end_to_end.py",
    "throughput": "benchmarks/throughput.py",
    "sim_scale": "benchmarks/sim_scale.py",
}
ScriptAt = Callable[[str, str], Optional[str]]


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_script_at(commit: str, script: str) -> Optional[str]:
    """The blob id of ``script`` at ``commit`` (None when the commit or the file there is unknown)."""
    out = _git("rev-parse", f"{commit}:{script}")
    return out.strip() if out else None


def git_last_commit(path: str) -> Optional[str]:
    """The last commit that changed ``path`` (None when it was never committed)."""
    out = _git("log", "-1", "--format=%H", "--", path)
    return out.strip() or None if out is not None else None


@dataclass
class Source:
    """One JSON file and where it came from."""

    path: str
    data: Dict[str, Any]
    command: Optional[str]
    commit: Optional[str]
    machine: str
    problem: Optional[str]  # why it is untraceable; None when it is traceable

    @property
    def status(self) -> str:
        """``traceable`` or ``untraceable: rerun (why)``."""
        return "traceable" if self.problem is None else f"untraceable: rerun ({self.problem})"

    @property
    def cite(self) -> str:
        """How a figure names this file."""
        return f"`{self.path}`" + ("" if self.problem is None else " (untraceable)")


def provenance_of(data: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str], str]:
    """``(command, commit, machine in words)`` of a benchmark JSON, whichever layout wrote it.

    Current files hold :data:`benchmarks.reporting.PROVENANCE_KEYS` at the top (aggregation's under ``info``);
    older ones hold ``commit`` in ``info`` or ``git_commit`` in ``environment``.
    """
    info = data.get("info", data)
    env = data.get("environment") or {}
    commit = info.get("git_commit") or info.get("commit") or env.get("git_commit")
    if info.get("machine") is not None:
        where = machine_text(info["machine"])
    elif env:
        gpu = f", GPU {env['gpu']}" if env.get("gpu") else ""
        where = f"{env.get('cpu_count')} CPU cores ({env.get('processor')}){gpu}"
    else:
        where = "not recorded"
    return info.get("command"), commit, where


def trace_problem(
    commit: Optional[str], script: Optional[str], made_at: Optional[str], script_at: ScriptAt = git_script_at
) -> Optional[str]:
    """Why a run of ``script`` recorded at ``commit`` cannot be traced to its code, or None when it can.

    Args:
        commit: The recorded commit (``+dirty`` allowed).
        script: The script that wrote the file (repository path), None when unknown.
        made_at: The commit whose ``script`` made the file (the one that committed it; None: the working tree's).
        script_at: ``(commit, path) -> blob id or None``; the working tree's when the commit is ``""``.
    """
    if not commit:
        return "no commit recorded"
    if script is None:
        return "no known script wrote it"
    recorded = script_at(commit.split("+")[0], script)
    if recorded is None:
        return f"commit {commit[:7]} unknown here"
    if recorded != script_at(made_at or "", script):
        return f"made by a {os.path.basename(script)} that commit {commit[:7]} does not hold"
    return None


def _working_tree_blob(path: str) -> Optional[str]:
    out = _git("hash-object", path)
    return out.strip() if out else None


def load_source(path: str, root: str = REPO, script_at: Optional[ScriptAt] = None) -> Source:
    """Reads one JSON file and judges its provenance (``path`` relative to ``root``, the repository)."""
    with open(os.path.join(root, path)) as f:
        data = json.load(f)
    command, commit, where = provenance_of(data)
    name = os.path.basename(path)
    script = next((s for prefix, s in SCRIPTS.items() if name.startswith(prefix)), None)
    if script_at is None:
        script_at = lambda c, s: git_script_at(c, s) if c else _working_tree_blob(s)  # noqa: E731
    made_at = git_last_commit(path) if root == REPO else None
    return Source(path, data, command, commit, where, trace_problem(commit, script, made_at, script_at))


# -- numbers --------------------------------------------------------------------------------------------------
def nominal(params: int) -> int:
    """The grid's d (a power of ten) of a layout with ``params`` parameters."""
    return 10 ** round(math.log10(params))


def num(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without an exponent (``1230``, ``0.0123``)."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``median (min–max)`` of ``values``; just the value when there is one."""
    if len(values) == 1:
        return num(values[0], digits)
    return f"{num(statistics.median(values), digits)} ({num(min(values), digits)}–{num(max(values), digits)})"


def _median(record: Mapping[str, Any], mode: str) -> float:
    """The median of ``mode``'s rounds (``{mode}_times_s``), or ``{mode}_s`` where a file keeps only that (older
    files: the floor's best)."""
    return statistics.median(record.get(f"{mode}_times_s") or [record[f"{mode}_s"]])


def _strong_floor(record: Mapping[str, Any]) -> Optional[float]:
    """The median strong floor (fresh outputs from the separate inputs, two passes), None where not measured."""
    return _median(record, "strong_floor") if record.get("strong_floor_s") else None


def floor_reason(source: Source) -> Optional[str]:
    """Why the ≤ 2× target is judged against the strong floor, from the file's own medians (None without one)."""
    records = [r for r in grid_records(source) if _strong_floor(r) and r.get("fresh_outputs_times_s")]
    if not records:
        return None
    fresh = [_median(r, "fresh_outputs") / _median(r, "copy") for r in records]
    strong = [_strong_floor(r) / _median(r, "floor") for r in records]
    return (
        f"In {source.cite}, copying the separate inputs into N fresh per-client outputs took "
        f"{min(fresh):.2f}–{max(fresh):.2f}× the contiguous copy (allocation and page faults of the fresh "
        f"outputs), and with the second pass over the inputs that the Gram forces the strong floor is "
        f"{min(strong):.2f}–{max(strong):.2f}× the contiguous one (medians, {len(records)} cells). No call that "
        "returns fresh updates can beat it, so the ≤ 2× target is judged against the strong floor; model-level ÷ "
        "the contiguous floor is given beside it."
    )


def cell_name(r: Mapping[str, Any]) -> str:
    """``N=32, d=1e7, fp32``."""
    return f"N={r['clients']}, d=1e{round(math.log10(r['params']))}, {r['dtype']}"


def grid_records(source: Source) -> List[Dict[str, Any]]:
    """The aggregation records inside the targets' grid."""
    return [
        r
        for r in source.data.get("records", [])
        if r["clients"] in GRID_CLIENTS and nominal(r["params"]) in GRID_PARAMS and r["dtype"] in GRID_DTYPES
    ]


def _judge(values: Dict[str, Optional[float]], bound: float, below: bool, expected: int) -> Tuple[str, str]:
    """``(measured, met?)`` of per-cell ratios against ``bound`` (``below``: ratio ≤ bound is met)."""
    have = {k: v for k, v in values.items() if v is not None}
    if not have:
        return "not measured", "unknown"
    over = [k for k, v in have.items() if (v > bound if below else v < bound)]
    measured = f"{min(have.values()):.2f}–{max(have.values()):.2f}× over {len(have)} cells"
    if len(have) < expected:
        measured += f" ({expected - len(have)} of the grid's cells not measured)"
    if not over:
        return measured, "yes" if len(have) == expected else "yes where measured"
    worst = max(over, key=lambda k: have[k]) if below else min(over, key=lambda k: have[k])
    return measured, f"**no**: {len(over)} of {len(have)} cells (worst {worst}: {have[worst]:.2f}×)"


def aggregation_targets(source: Source, where: str) -> List[List[str]]:
    """Target rows (target, measured, met?, source) of one aggregation file; ratios of medians."""
    records = grid_records(source)
    full = len(GRID_CLIENTS) * len(GRID_PARAMS) * len(GRID_DTYPES)
    floor = {cell_name(r): _median(r, "model") / _median(r, "floor") for r in records}
    strong = {cell_name(r): (_median(r, "model") / _strong_floor(r) if _strong_floor(r) else None) for r in records}
    layer = {cell_name(r): _median(r, "layer") / _median(r, "model") for r in records}
    pair_records = [r for r in records if r["clients"] == PAIRWISE_CLIENTS]
    bound = f"≤ {FLOOR_BOUND:g}×"
    if any(strong.values()):
        rows = [
            [f"{where}: model-level ÷ strong floor", bound, *_judge(strong, FLOOR_BOUND, True, full)],
            [
                f"{where}: model-level ÷ contiguous floor",
                f"{bound} (beside it)",
                *_judge(floor, FLOOR_BOUND, True, full),
            ],
        ]
    else:
        rows = [[f"{where}: model-level ÷ floor", bound, *_judge(floor, FLOOR_BOUND, True, full)]]
    rows.append([f"{where}: layer-wise ÷ model-level", f"≤ {LAYER_BOUND:g}×", *_judge(layer, LAYER_BOUND, True, full)])
    for key, loop in (("per_tensor_s", "per-tensor"), ("pairwise_s", "flattened")):
        ratios = {cell_name(r): (r[key] / _median(r, "model") if r.get(key) else None) for r in pair_records}
        target = f"{where}: {loop} pairwise loop ÷ model-level, N = {PAIRWISE_CLIENTS}"
        rows.append([target, f"≥ {PAIRWISE_BOUND:g}×", *_judge(ratios, PAIRWISE_BOUND, False, len(pair_records))])
    return [row + [source.cite] for row in rows]


def end_to_end_targets(source: Source) -> List[List[str]]:
    """The round-time and bytes rows of the end-to-end file."""
    cmp = source.data["comparison"]
    pairs = [p["ratio"] for p in cmp.get("pair_ratios", [])]
    ratio = cmp["steady_round_mean_ratio"]
    measured = f"{ratio:.3f}× (steady rounds, mean; pairs {', '.join(f'{p:.3f}' for p in pairs)})"
    met = "yes" if ratio <= ROUND_BOUND and all(p <= ROUND_BOUND for p in pairs) else "**no**"
    rows = [["round time, FedBip ÷ FedAvg", f"≤ {ROUND_BOUND:g}×", measured, met]]
    b = cmp["bytes"]
    payload_equal = all(b[d]["parts"]["data_bytes"] == 0 for d in ("in", "out"))
    measured = "; ".join(
        f"{word}: {b[d]['diff']['mean']:+,.0f} B ({100 * b[d]['relative']['mean']:+.2f} %; payload "
        f"{b[d]['parts']['data_bytes']:+,.0f} B, meta {b[d]['parts']['meta_bytes']:+,.0f} B, headers "
        f"{b[d]['parts']['header_bytes']:+,.0f} B)"
        for word, d in (("sent", "out"), ("received", "in"))
    )
    whole = all(b[d]["diff"]["mean"] == 0 for d in ("in", "out"))
    met = "yes" if whole else ("payload yes; whole messages differ" if payload_equal else "**no**")
    rows.append(["bytes per client per round, FedBip − FedAvg", "equal", measured, met])
    return [row + [source.cite] for row in rows]


def steady_rates(result: Mapping[str, Any]) -> List[float]:
    """Examples/s of a throughput configuration's rounds after the first (the warm-up)."""
    return [r["examples_per_s"] for r in result.get("rounds", []) if r["round"] > 1 and r.get("examples_per_s")]


def config_name(result: Mapping[str, Any], batch_size: Any) -> str:
    """``cpu fp32, len 64, 1 thread(s), batch 16``."""
    c = result["config"]
    threads = f", {c['threads']} thread(s)" if c.get("threads") else ""
    return f"{c['device']} {c['precision']}, len {c['max_length']}{threads}, batch {batch_size}"


def throughput_target(source: Source) -> List[str]:
    """The throughput row of one file: the range of steady medians, and whether the hot path held."""
    results = [r for r in source.data.get("results", []) if r.get("status") == "ok"]
    medians = [statistics.median(steady_rates(r)) for r in results if steady_rates(r)]
    clean = all(r.get("same_model") and r.get("frozen_unchanged") for r in results)
    measured = f"{num(min(medians))}–{num(max(medians))} examples/s (medians of {len(medians)} configurations)"
    met = "yes" if results and clean else "**no**: a model reloaded or frozen weights changed"
    return ["client training throughput", "measured; model loaded once, frozen weights unchanged"] + [
        measured,
        met,
        source.cite,
    ]


# -- what limits us ------------------------------------------------------------------------------------------
def _span(values: Sequence[float], fmt: Callable[[float], str] = num, unit: str = "") -> str:
    """``min–max`` of ``values`` (just the value when they are all equal), each with ``unit``."""
    low, high = fmt(min(values)), fmt(max(values))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def _names(cells: Sequence[str]) -> str:
    """``A; B and C``: cell names, which hold commas themselves."""
    return cells[0] if len(cells) == 1 else "; ".join(cells[:-1]) + " and " + cells[-1]


def _plural(count: int, word: str) -> str:
    """``1 attempt``, ``3 attempts``."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def _times_x(ratio: float) -> str:
    """A loop's ratio: ``6.6×``, ``101×``, ``12,066×``."""
    return f"{ratio:.1f}×" if ratio < 100 else f"{ratio:,.0f}×"


def _excess_us(r: Mapping[str, Any]) -> float:
    """Model-level's median above the strong floor, per input tensor: (model − strong floor) / (N × tensors), µs."""
    return (_median(r, "model") - _strong_floor(r)) / (r["clients"] * r["tensors"]) * 1e6


def floor_limits(source: Source, where: str) -> str:
    """Paragraph on the ≤ 2× strong-floor target: the cells over, the excess per tensor, 16-bit math, spread."""
    lead = f"**{where}: model-level ≤ {FLOOR_BOUND:g}× the strong floor.**"
    records = grid_records(source)
    strong = [r for r in records if _strong_floor(r)]
    if not strong:
        return (
            f"{lead} {source.cite} has no strong floor (older layout), so the excess over it is not computed here; "
            "the targets table judges model-level against the contiguous floor."
        )
    ratio = {cell_name(r): _median(r, "model") / _strong_floor(r) for r in strong}
    over = [r for r in strong if ratio[cell_name(r)] > FLOOR_BOUND]
    within = [r for r in strong if ratio[cell_name(r)] <= FLOOR_BOUND]
    parts = [f"{lead} From {source.cite} (medians):"]
    if over:
        parts.append(f"{len(over)} of {len(strong)} cells are over: {_names([cell_name(r) for r in over])}.")
    else:
        parts.append(f"all {len(strong)} cells meet it.")
    counted = [r for r in strong if r.get("tensors")]
    if counted:
        groups = [("those cells", [r for r in over if r.get("tensors")])]
        groups.append((f"the {len(within)} within it" if over else "them", [r for r in within if r.get("tensors")]))
        said = [f"{_span([_excess_us(r) for r in g], unit=' µs')} in {name}" for name, g in groups if g]
        parts.append(
            "Model-level's time above the strong floor per input tensor ((model − strong floor) ÷ (N × tensors)) is "
            + " and ".join(said)
            + "."
        )
        by_d: Dict[int, List[Mapping[str, Any]]] = {}
        for r in counted:
            by_d.setdefault(nominal(r["params"]), []).append(r)
        if len(by_d) > 1:
            spans = [
                f"{_span([_excess_us(r) for r in rs], unit=' µs')} at d=1e{round(math.log10(d))} "
                f"({_span([r['tensors'] for r in rs], lambda t: f'{int(t):,}')} tensors of "
                f"{_span([r['params'] / r['tensors'] for r in rs], lambda v: f'{v:,.0f}')} parameters on average)"
                for d, rs in sorted(by_d.items())
            ]
            highs = [max(_excess_us(r) for r in rs) for _, rs in sorted(by_d.items())]
            lows = [min(_excess_us(r) for r in rs) for _, rs in sorted(by_d.items())]
            grows = all(h < lo for h, lo in zip(highs, lows[1:]))
            parts.append(
                f"By d: {'; '.join(spans)}. "
                + (
                    "The excess per tensor grows with the tensors' size, so it is not a fixed per-tensor cost alone."
                    if grows
                    else "The ranges overlap across d, as they would for a fixed per-tensor cost."
                )
            )
    parts += _fp32_math_limits(strong, ratio)
    parts += _spread_limits(strong)
    return " ".join(parts)


def _fp32_math_limits(strong: Sequence[Mapping[str, Any]], ratio: Mapping[str, float]) -> List[str]:
    """Sentences on the 16-bit cells: how much of the excess the fp32-math strong floor accounts for."""
    half = [r for r in strong if r.get("strong_floor_fp32_math_s")]
    if not half:
        return []
    gap = {cell_name(r): _median(r, "strong_floor_fp32_math") - _strong_floor(r) for r in half}
    excess = {cell_name(r): _median(r, "model") - _strong_floor(r) for r in half}
    above = [cell_name(r) for r in half if gap[cell_name(r)] > 0]
    below = [cell_name(r) for r in half if gap[cell_name(r)] <= 0]
    dtypes = "/".join(sorted({r["dtype"] for r in half}))
    out = []
    if above:
        text = (
            f"In {len(above)} of the {len(half)} {dtypes} cells the fp32-math strong floor (FedBip accumulates in "
            f"fp32) is above the {dtypes} one" + (f", and below it in {_names(below)}." if below else ".")
        )
        shares = {c: 100 * gap[c] / excess[c] for c in above if excess[c] > 0}
        if shares:
            most = max(shares, key=shares.get)
            share = _span(list(shares.values()), lambda v: f"{v:.0f}")
            text += (
                f" Where above, the difference is {share} % of model-level's excess over the {dtypes} strong floor "
                f"(most in {most}: {shares[most]:.0f} %)."
            )
        out.append(text)
    else:
        out.append(f"In all {len(half)} {dtypes} cells the fp32-math strong floor is at or below the {dtypes} one.")
    over = [r for r in half if ratio[cell_name(r)] > FLOOR_BOUND]
    if over:
        fp32 = {cell_name(r): _median(r, "model") / _median(r, "strong_floor_fp32_math") for r in over}
        met = [c for c in fp32 if fp32[c] <= FLOOR_BOUND]
        said = "; ".join(f"{c}: {fp32[c]:.2f}×" for c in fp32)
        out.append(
            f"Against the fp32-math strong floor, {len(met)} of the {len(over)} {dtypes} cells over "
            f"{FLOOR_BOUND:g}× would be within it ({said})."
        )
    return out


def _spread_limits(strong: Sequence[Mapping[str, Any]]) -> List[str]:
    """Sentences on the cells whose model-level spread stayed above ``--max-spread`` after all attempts."""
    checked = [r for r in strong if "max_spread" in r and "model" in r.get("spread", {})]
    if not checked:
        return []
    wide = [r for r in checked if r["spread"]["model"] > r["max_spread"]]
    limit = ", ".join(sorted({f"{r['max_spread']:g}" for r in checked}))
    if not wide:
        return [f"Model-level's (max − min) ÷ median stayed within {limit} in every cell."]
    said = []
    for r in wide:
        times, floor = r.get("model_times_s") or [r["model_s"]], _strong_floor(r)
        said.append(
            f"{cell_name(r)} ({r['spread']['model']:.2f} after {_plural(r.get('attempts', 1), 'attempt')}; rounds "
            f"{', '.join(num(t) for t in times)} s: the fastest is {min(times) / floor:.2f}× the strong floor, the "
            f"median {statistics.median(times) / floor:.2f}×)"
        )
    return [
        f"Model-level's (max − min) ÷ median stayed above {limit} after all attempts in {len(wide)} of "
        f"{len(checked)} cells: {'; '.join(said)}."
    ]


def layer_limits(source: Source, where: str) -> str:
    """Paragraph on the layer-wise ≤ 1.5× model-level target."""
    lead = f"**{where}: layer-wise ≤ {LAYER_BOUND:g}× model-level.**"
    records = grid_records(source)
    if not records:
        return f"{lead} {source.cite} has no cells of the grid."
    ratio = {cell_name(r): _median(r, "layer") / _median(r, "model") for r in records}
    over = [c for c in ratio if ratio[c] > LAYER_BOUND]
    high, low = max(ratio, key=ratio.get), min(ratio, key=ratio.get)
    verdict = f"Not met in {len(over)} of {len(ratio)} cells" if over else "Met"
    wide = {cell_name(r) for r in records if r.get("spread", {}).get("model", 0) > r.get("max_spread", math.inf)}
    note = ", whose model-level spread stayed above the threshold" if low in wide else ""
    return (
        f"{lead} {verdict} in {source.cite}: layer-wise ÷ model-level is {ratio[low]:.2f}–{ratio[high]:.2f}× over "
        f"{len(ratio)} cells (medians), highest in {high} ({ratio[high]:.2f}×), lowest in {low} "
        f"({ratio[low]:.2f}×{note})."
    )


def pairwise_limits(source: Source, where: str) -> List[str]:
    """Paragraph on the ≥ 20× pairwise target: loop ÷ model-level, and loop ÷ floor, the most any call could show."""
    lead = f"**{where}: ≥ {PAIRWISE_BOUND:g}× a pairwise loop at N = {PAIRWISE_CLIENTS}.**"
    records = [r for r in grid_records(source) if r["clients"] == PAIRWISE_CLIENTS]
    if not records:
        return [f"{lead} {source.cite} has no cell with N = {PAIRWISE_CLIENTS}."]
    has_strong = any(_strong_floor(r) for r in records)
    floor_name = "strong floor" if has_strong else "contiguous floor"
    why = "" if has_strong else " (this file has no strong floor)"
    lines = [
        f"{lead} From {source.cite}; each loop is one run, model-level and the floor are medians. Loop ÷ "
        f"{floor_name}{why} is the largest speed-up that any implementation doing the {floor_name}'s work could "
        "show against that loop.",
        "",
    ]
    for key, loop in (("per_tensor_s", "Per-tensor loop"), ("pairwise_s", "Flattened loop")):
        missing = []
        for r in records:
            if not r.get(key):
                missing.append(cell_name(r))
                continue
            floor = (_strong_floor(r) if has_strong else None) or _median(r, "floor")
            bound = r[key] / floor
            text = (
                f"- {loop}, {cell_name(r)}: {num(r[key])} s, {_times_x(r[key] / _median(r, 'model'))} model-level, "
                f"{_times_x(bound)} the {floor_name}"
            )
            if bound < PAIRWISE_BOUND:
                text += f", so {PAIRWISE_BOUND:g}× is out of reach for any implementation against this loop."
            else:
                need = r[key] / PAIRWISE_BOUND
                multiple = f"{need / floor:.2f}×" if need / floor < 100 else _times_x(need / floor)
                text += f"; {PAIRWISE_BOUND:g}× needs model-level ≤ {num(need)} s, {multiple} the {floor_name}."
            lines.append(text)
        if missing:
            lines.append(f"- {loop}: not measured in {_names(missing)}.")
    return lines


def limits_lines(sources: Mapping[str, Source]) -> List[str]:
    """The "What limits us" section's body: one paragraph per aggregation target, per aggregation file."""
    lines: List[str] = []
    for path, source in sources.items():
        if not os.path.basename(path).startswith("aggregation"):
            continue
        where = device_of(source)
        lines += [floor_limits(source, where), "", layer_limits(source, where), "", *pairwise_limits(source, where)]
        lines.append("")
    return lines[:-1]


# -- page -----------------------------------------------------------------------------------------------------
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def find_sources(results: str = RESULTS, root: str = REPO) -> Dict[str, Source]:
    """Every JSON the page reads, by path relative to ``root``."""
    patterns = ["aggregation.json", "end_to_end/end_to_end.json", "throughput/throughput.json", "gpu-*/*.json"]
    patterns.append("sim_scale/sim_scale.json")
    paths = sorted({p for pat in patterns for p in glob.glob(os.path.join(root, results, pat))})
    return {os.path.relpath(p, root): load_source(os.path.relpath(p, root), root) for p in paths}


def device_of(source: Source) -> str:
    """``CPU`` or the GPU's name, for a target's label."""
    gpu_dir = os.path.basename(os.path.dirname(source.path))
    return f"GPU {gpu_dir[len('gpu-'):].upper()}" if gpu_dir.startswith("gpu-") else "CPU"


def targets(sources: Mapping[str, Source]) -> List[List[str]]:
    """All target rows, from whichever files are present."""
    rows: List[List[str]] = []
    for path, source in sources.items():
        name = os.path.basename(path)
        if name.startswith("aggregation"):
            rows += aggregation_targets(source, device_of(source))
    for path, source in sources.items():
        if os.path.basename(path).startswith("end_to_end"):
            rows += end_to_end_targets(source)
    for path, source in sources.items():
        if os.path.basename(path).startswith("throughput"):
            row = throughput_target(source)
            rows.append([f"{row[0]} ({device_of(source)}, {os.path.basename(path)})", *row[1:]])
    return rows


TARGET_HEADER = ("target", "bound", "measured", "met?", "source")


def targets_table(sources: Mapping[str, Source]) -> str:
    """The targets table alone (the README's part)."""
    return "\n".join(table(TARGET_HEADER, targets(sources)))


def provenance_lines(sources: Mapping[str, Source]) -> List[str]:
    """Each file's command, commit, machine and status; a warning when they come from different commits."""
    rows = [[f"`{s.path}`", f"`{s.command}`", f"`{s.commit}`", s.machine, s.status] for s in sources.values()]
    lines = table(("file", "command", "commit", "machine", "status"), rows)
    commits = sorted({str(s.commit) for s in sources.values()})
    if len(commits) > 1:
        lines += ["", f"**These files come from {len(commits)} different commits: {', '.join(commits)}.**"]
    return lines


def _times(record: Mapping[str, Any], mode: str) -> Optional[str]:
    """``median (min–max)`` of ``mode``'s rounds, its one value where the file keeps only that, or None."""
    values = record.get(f"{mode}_times_s") or ([record[f"{mode}_s"]] if record.get(f"{mode}_s") else None)
    return spread(values) if values else None


def _check(record: Mapping[str, Any]) -> str:
    """``attempts (widest spread)`` of a cell's variance check, ``—`` where the file has none."""
    if "attempts" not in record:
        return "—"
    return f"{record['attempts']} ({max(record['spread'].values()):.2f})"


def aggregation_lines(source: Source) -> List[str]:
    """One aggregation file's cells: medians (min–max) of the repeated calls, single runs as they are."""
    rows = []
    records = source.data.get("records", [])
    for r in records:
        model = _median(r, "model")
        stream_all = f"{num(r['stream_all_s'])}" + (" (extrapolated)" if r.get("stream_all_extrapolated") else "")
        fp32 = f" (fp32 math {num(_median(r, 'floor_fp32_math'))})" if r.get("floor_fp32_math_s") else ""
        strong = _strong_floor(r)
        strong_fp32 = (
            f" (fp32 math {num(_median(r, 'strong_floor_fp32_math'))})" if r.get("strong_floor_fp32_math_s") else ""
        )
        fresh = f"{_median(r, 'fresh_outputs') / _median(r, 'copy'):.2f}×" if r.get("fresh_outputs_times_s") else "—"
        rows.append(
            [
                r["clients"],
                f"1e{round(math.log10(r['params']))} ({r['params']:,})",
                r["dtype"],
                f"{_times(r, 'floor')}{fp32}",
                f"{_times(r, 'strong_floor')}{strong_fp32}" if strong else "—",
                fresh,
                _times(r, "model"),
                f"{model / _median(r, 'floor'):.2f}×",
                f"{model / strong:.2f}×" if strong else "—",
                _times(r, "layer"),
                f"{_median(r, 'layer') / model:.2f}×",
                f"{num(r['per_tensor_s'])} ({r['per_tensor_s'] / model:.1f}×)" if r.get("per_tensor_s") else "—",
                f"{num(r['pairwise_s'])} ({r['pairwise_s'] / model:.1f}×)" if r.get("pairwise_s") else "—",
                f"{r['outputs_bytes'] / 2**30:.3f}",
                f"{r['model_peak_extra_bytes'] / 2**30:.3f}" if r.get("model_peak_extra_bytes") is not None else "—",
                _times(r, "stream_one"),
                stream_all,
                _check(r),
            ]
        )
    header = (
        "N",
        "d",
        "dtype",
        "floor (s)",
        "strong floor (s)",
        "fresh outputs ÷ copy",
        "model-level (s)",
        "÷ floor",
        "÷ strong floor",
        "layer-wise (s)",
        "layer ÷ model",
        "per-tensor pair loop (s, one run)",
        "flattened pair loop (s, one run)",
        "outputs GiB",
        "peak extra GiB",
        "stream 1 client (s)",
        "stream all N (s)",
        "attempts (widest spread)",
    )
    repeats = {len(r.get("model_times_s") or []) for r in records}
    interleaved = any("attempts" in r for r in records)
    if interleaved:
        how = (
            "every time is the median (min–max) of rounds in which the floors' parts, model-level, layer-wise and "
            "one streamed client were each called once, interleaved round-robin after a warm-up round; a cell whose "
            "floors', model-level's or layer-wise's (max − min) / median exceeded "
            f"{', '.join(sorted({str(r['max_spread']) for r in records if 'max_spread' in r}))} was rerun, and the "
            "attempt with the narrowest spread kept (attempts: runs made; the widest checked spread of the kept one)"
        )
    else:
        how = (
            "model-level and layer-wise are the median (min–max) of the calls after a warm-up, each variant's "
            "calls back to back (not interleaved); the floor is the best of its repeats (the file keeps no others)"
        )
    lines = [
        f"From {source.cite}, {', '.join(map(str, sorted(repeats)))} repeats: {how}. Ratios are of medians. "
        '"all N" streamed is extrapolated where fewer clients were streamed than N.',
        "",
    ]
    reason = floor_reason(source)
    if reason:
        lines += [f"Which floor: {reason}", ""]
    return lines + table(header, rows)


def end_to_end_lines(source: Source) -> List[str]:
    """Round times and bytes per method, median (min–max) over the runs' rounds."""
    rows = []
    for method, s in source.data["summaries"].items():

        def stat(key: str, digits: int = 4) -> str:
            v = s.get(key)
            if not v:
                return "—"
            middle = f"{num(v['median'], digits)} ({num(v['min'], digits)}–{num(v['max'], digits)})"
            return f"{middle}, mean {num(v['mean'], digits)}"

        rows.append(
            [method, stat("steady_round_s"), stat("total_s"), stat("aggregation_s", 2), stat("bytes_in", 6)]
            + [stat("bytes_out", 6), stat("mean_accuracy")]
        )
    header = (
        "method",
        "steady round (s)",
        "job total (s)",
        "server aggregation (s)",
        "bytes received per round",
        "bytes sent per round",
        "final mean accuracy",
    )
    return [
        f"From {source.cite}: median (min–max), mean over the rounds after round 0 (which loads the model) of "
        f"{source.data['settings'].get('repeats')} alternating runs per method.",
        "",
        *table(header, rows),
    ]


def throughput_lines(source: Source) -> List[str]:
    """Examples/s per configuration: median (min–max) over the rounds after the warm-up round."""
    batch = source.data.get("settings", {}).get("batch_size")
    rows = []
    for r in source.data.get("results", []):
        rates = steady_rates(r)
        rows.append(
            [
                config_name(r, batch),
                r.get("status"),
                spread(rates) if rates else "—",
                f"{num(r['receive_ms'])}" if r.get("receive_ms") else "—",
                f"{num(r['export_ms'])}" if r.get("export_ms") else "—",
                f"{num(r['load_s'])}" if r.get("load_s") else "—",
                "yes" if r.get("same_model") and r.get("frozen_unchanged") else "no",
            ]
        )
    header = ("configuration", "status", "examples/s", "receive (ms)", "export (ms)", "load (s)", "loaded once")
    return [
        f"From {source.cite}: examples/s median (min–max) over the rounds after the first.",
        "",
        *table(header, rows),
    ]


def sim_scale_lines(source: Source) -> List[str]:
    """Clients × simulator threads: whether the job completed, wall time, peak memory and processes."""
    rows = [
        [
            r["clients"],
            r["threads"],
            "yes" if r.get("completed") else "no",
            r.get("clients_with_result"),
            num(r["wall_time_s"]),
            num(r["peak_pss_mib"]),
            r.get("peak_processes"),
        ]
        for r in source.data.get("runs", [])
    ]
    header = (
        "clients",
        "threads",
        "completed",
        "clients with a result",
        "wall time (s)",
        "peak PSS (MiB)",
        "processes",
    )
    config = ", ".join(f"{k}={v}" for k, v in source.data.get("config", {}).items())
    lines = [f"From {source.cite} ({config}): one run per row; memory is the PSS of all the job's processes.", ""]
    if source.data.get("note"):
        lines += [f"Note in the file: {source.data['note']}.", ""]
    return lines + table(header, rows)


METHOD = """\
What each benchmark measures (the commands are in the provenance table):

- **Aggregation** (`benchmarks/aggregation.py`): task vectors shaped like LoRA adapters, each tensor its own
  allocation as after deserialization. The (contiguous) floor is the larger of the memory floor (copy the `[N, d]`
  matrix) and the compute floor (`X Xᵀ` + `W X` on contiguous `X` into a preallocated output), in the inputs' dtype;
  for 16-bit inputs the fp32-math floor is given too, since FedBip accumulates in fp32. The strong floor (files that
  have it) is what any call that returns N fresh updates from the separate inputs must do: a Gram pass (max of
  `X Xᵀ` and one read of the separate inputs), then a combine pass (max of `W X` and copying the separate inputs
  into fresh per-client outputs, allocated as ours are), and never less than the contiguous floor. The pairwise loops
  are `benchmarks/pairwise_reference.py` (per-tensor: a loop over client pairs and tensors; flattened: one BLAS `dot`
  per pair), checked equal to ours in the tests. Peak memory is the resident peak a call adds.
- **End to end** (`benchmarks/end_to_end.py`): FedBip (`FedBipController`) against NVFlare's stock `FedAvg` through
  `FedBipRecipe` in SimEnv, same executor, data and model; runs alternate between the methods. Round time is read
  from the server's structured log; bytes are `len(fobs.dumps(shareable))` of every train task and result, recorded
  by a client filter (`benchmarks/payload_log.py`).
- **Throughput** (`benchmarks/throughput.py`): the real `TextSiteTrainer`, loaded once per configuration and trained
  for several rounds (receive → train → export); the first round is the warm-up."""


def page(sources: Mapping[str, Source], command: str) -> str:
    """The whole page."""
    lines = [
        "# Performance: aggregation, rounds, bytes, training throughput",
        "",
        f"Generated by `{command}` from the JSON files below; do not edit by hand. No test asserts any time.",
        "",
        "## Where the numbers come from",
        "",
        *provenance_lines(sources),
        "",
        "## Targets",
        "",
        "Ratios in the aggregation rows are per cell of the grid N ∈ {"
        + ", ".join(map(str, GRID_CLIENTS))
        + "}, d ∈ {"
        + ", ".join(f"1e{round(math.log10(d))}" for d in GRID_PARAMS)
        + "}, "
        + " and ".join(GRID_DTYPES)
        + "; a target is met only where every cell meets it.",
        "",
        targets_table(sources),
        "",
        *(["## What limits us", "", *limits_lines(sources), ""] if limits_lines(sources) else []),
        "## Method",
        "",
        METHOD,
    ]
    for path, source in sources.items():
        name = os.path.basename(path)
        if name.startswith("aggregation"):
            section = f"Aggregation ({device_of(source)})"
            body = aggregation_lines(source)
        elif name.startswith("end_to_end"):
            section, body = "End to end: FedBip against NVFlare's FedAvg", end_to_end_lines(source)
        elif name.startswith("throughput"):
            section, body = f"Client training throughput ({device_of(source)}, {name})", throughput_lines(source)
        elif name.startswith("sim_scale"):
            section, body = "Many clients on few simulator threads", sim_scale_lines(source)
        else:
            continue
        lines += ["", f"## {section}", "", *body]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints the page, or writes it to ``--write`` and the targets table into ``--readme``'s markers."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=RESULTS, help="folder of the performance JSON, relative to the repository")
    p.add_argument("--write", default=None, help="file for the page (default: print it)")
    p.add_argument("--readme", nargs="*", default=[], help="files whose perf-table markers get the targets table")
    args = p.parse_args(argv)
    sources = find_sources(args.results)
    if not sources:
        print(f"error: no benchmark JSON under {args.results}", file=sys.stderr)
        return 2
    text = page(sources, command_line("benchmarks.performance_page", sys.argv[1:] if argv is None else argv))
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
    else:
        print(text)
    note = f"Generated by `python -m benchmarks.performance_page` from `{args.results}`; details in the page."
    for path in args.readme:
        write_between_markers(path, targets_table(sources) + "\n\n" + note, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
