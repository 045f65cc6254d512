"""Aggregation scale: FedBip's server step against the machine's floor and a pairwise-loop implementation.

python -m benchmarks.aggregation --output benchmarks/results/performance            # the committed grid
python -m benchmarks.aggregation --clients 8 --params 1e5 --output /tmp/agg          # a quick look

For every N clients × d parameters × dtype, with task vectors shaped like LoRA adapters (pairs of
``[r, h]`` / ``[h, r]`` tensors, r = 8; h = 768 up to d = 1e6, h = 4096 for larger d, 4 tensors per layer),
it measures in the same process:

- two floors, timed interleaved with our calls (see :func:`run_config`): the contiguous floor, the larger of the
  memory floor (copy an ``[N, d]`` matrix) and the compute floor (``X Xᵀ`` plus ``W X`` on contiguous ``X``, the
  same FLOPs as FedBip); and the strong floor of any call that takes N separately allocated task vectors and
  returns N fresh updates: a Gram pass (max of ``X Xᵀ`` and one read of the separate inputs), then a combine pass
  (max of ``W X`` and copying the separate inputs into fresh per-client outputs). For 16-bit inputs both are also
  given with the matmuls in fp32 (FedBip's math is fp32);
- ``personalized_aggregate`` model-level and layer-wise, and one streamed client: every variant is called once per
  round, round-robin, for ``--repeats`` rounds after a warm-up round; a cell whose floors', model-level's or
  layer-wise's ``(max − min) / median`` exceeds ``--max-spread`` is rerun, up to ``--max-attempts`` attempts, and
  the attempt with the narrowest spread is kept (``attempts``, ``spread`` and ``attempt_spreads`` say how it went);
- the peak extra resident memory of a call (``VmHWM`` after resetting it, minus the resident size before the call)
  against the outputs' size;
- streaming (``streaming=True``): all N one at a time, each dropped after use;
- the pairwise loop of :mod:`benchmarks.pairwise_reference` (model-level, where it fits the time budget; one run),
  and the largest difference between its updates and ours.

Memory: a cell holds the contiguous matrix, its copy target and the separate inputs at once, plus one call's
outputs (about 4·N·d elements; 16-bit cells add two fp32 ``[N, d]`` matrices): about 19 GiB at N = 128, d = 1e7.

Writes ``DIR/aggregation.json`` (raw numbers, settings, machine) and ``DIR/aggregation.md`` (tables), and
prints the table. Times are this machine's; nothing here is asserted.
"""

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from benchmarks.pairwise_reference import pairwise_per_tensor, pairwise_personalized
from benchmarks.reporting import command_line, machine_text, provenance, write_report
from fedbip_nvflare.core import personalized_aggregate
from fedbip_nvflare.core.blocks import flat_outputs

RANK = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODULES = ("q_proj", "v_proj")


def hidden_size(num_params: int) -> int:
    """LoRA input width used for ``num_params``: 768 (a BERT-size layer) up to 1e6, else 4096 (a 7B LLM)."""
    return 768 if num_params <= 1_000_000 else 4096


def lora_layout(num_params: int) -> Dict[str, tuple]:
    """``{name: shape}`` of LoRA-shaped tensors adding up to about ``num_params`` parameters (at least one pair)."""
    h = hidden_size(num_params)
    shapes: Dict[str, tuple] = {}
    layer, total = 0, 0
    while total < num_params or not shapes:
        for module in MODULES:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, h)
            shapes[f"{prefix}.lora_B.weight"] = (h, RANK)
            total += 2 * RANK * h
        layer += 1
    return shapes


def split_rows(matrix: torch.Tensor, layout: Dict[str, tuple], names: Sequence[str]) -> Dict[str, Dict]:
    """Every row of ``matrix`` as its own ``{name: tensor}`` (separate allocations, like deserialized updates)."""
    vectors = {}
    for client, row in zip(names, matrix):
        offset, vector = 0, {}
        for name, shape in layout.items():
            size = shape[0] * shape[1]
            vector[name] = row[offset : offset + size].view(shape).clone()
            offset += size
        vectors[client] = vector
    return vectors


def resident_kib() -> Dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def fix_mmap_threshold(size: int = 128 << 10) -> bool:
    """Fixes glibc's mmap threshold at its initial 128 KiB (``mallopt(M_MMAP_THRESHOLD)``).

    glibc raises the threshold after large frees, after which freed buffers stay resident and are reused:
    resident-size peaks would then miss new allocations. Fixed, every buffer of 128 KiB or more is mapped when
    allocated and returned when freed, as in a fresh process, so ``VmHWM`` sees what a call allocates.
    """
    try:
        return ctypes.CDLL(None).mallopt(-3, size) == 1
    except (OSError, AttributeError):
        return False


def reset_peak() -> bool:
    """Resets ``VmHWM`` to the current resident size (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


DEVICE = torch.device("cpu")


def synchronize() -> None:
    """Waits for the device's queued work (CUDA); nothing on CPU."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Dict[str, Any]:
    """Median and all wall times of ``fn`` over ``repeats`` calls after ``warmup`` calls; results dropped."""
    times = interleaved_times({"fn": fn}, repeats, warmup)["fn"]
    return {"median_s": statistics.median(times), "best_s": min(times), "times_s": [round(t, 5) for t in times]}


def _settle() -> None:
    """Between two timed calls: wait for the device and collect the dropped result."""
    synchronize()
    gc.collect()


def interleaved_times(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    settle: Callable[[], None] = _settle,
) -> Dict[str, List[float]]:
    """Wall times of every variant, their calls interleaved round-robin so that noise hits all of them alike.

    ``warmup`` untimed rounds, then ``repeats`` timed rounds; each round calls every variant once, starting one
    variant later than the round before (so no variant always follows the same one). Each call's result is
    dropped and ``settle`` runs (untimed) before the next call.

    Returns:
        ``{variant: [seconds per timed round]}``.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
            settle()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            variants[name]()
            synchronize()
            times[name].append(clock() - start)
            settle()
    return times


def relative_spread(times: Sequence[float]) -> float:
    """``(max − min) / median``: the width of the repeats' range relative to their middle (0 for one repeat)."""
    middle = statistics.median(times)
    return (max(times) - min(times)) / middle if middle > 0 else 0.0


def stable_times(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    max_spread: float,
    max_attempts: int,
    derive: Callable[[Dict[str, List[float]]], Dict[str, List[float]]] = lambda times: {},
    checked: Optional[Sequence[str]] = None,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    settle: Callable[[], None] = _settle,
) -> Tuple[Dict[str, List[float]], Dict[str, Any]]:
    """:func:`interleaved_times`, rerun while a checked series' :func:`relative_spread` exceeds ``max_spread``.

    An attempt is one whole interleaved run (the warm-up only before the first). Up to ``max_attempts``
    attempts; the one whose widest checked spread is smallest is kept, whether or not it passed.

    Args:
        derive: ``times -> {series: [seconds per round]}``: series computed round by round from the variants'
            times (e.g. a floor as the max of two parts), added to the times and checkable.
        checked: The series whose spread is checked (default: all).

    Returns:
        ``(times, check)``: the kept attempt's times (variants and derived series) and ``{"attempts": used,
        "max_spread": threshold, "spread": {series: spread of the kept attempt}, "attempt_spreads": [widest
        checked spread of each attempt]}``.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    best: Optional[Tuple[float, Dict[str, List[float]]]] = None
    widest: List[float] = []
    for attempt in range(max_attempts):
        times = interleaved_times(variants, repeats, warmup if attempt == 0 else 0, clock, settle)
        times.update(derive(times))
        spreads = {name: relative_spread(times[name]) for name in (checked or list(times))}
        widest.append(max(spreads.values()))
        if best is None or widest[-1] < best[0]:
            best = (widest[-1], times)
        if widest[-1] <= max_spread:
            break
    kept = best[1]
    check = {
        "attempts": len(widest),
        "max_spread": max_spread,
        "spread": {name: round(relative_spread(kept[name]), 4) for name in (checked or list(kept))},
        "attempt_spreads": [round(w, 4) for w in widest],
    }
    return kept, check


def peak_extra_bytes(fn: Callable[[], Any]) -> Optional[int]:
    """Peak bytes ``fn`` adds above what was in use before it (its result held until it returns).

    CPU: resident memory (``VmRSS`` / ``VmHWM``); CUDA: the caching allocator's allocated bytes.
    """
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats(DEVICE)
        before = torch.cuda.memory_allocated(DEVICE)
        result = fn()
        peak = torch.cuda.max_memory_allocated(DEVICE)
        del result
        return peak - before
    if not reset_peak():
        return None
    before = resident_kib()["VmRSS"]
    result = fn()
    peak = resident_kib()["VmHWM"]
    del result
    gc.collect()
    return (peak - before) * 1024


def read_inputs(tensors: Sequence[torch.Tensor]) -> None:
    """One read of every input tensor where it lies (a sum each): the least the Gram's pass must do."""
    for t in tensors:
        t.sum()


def fresh_outputs(vectors: Sequence[Mapping[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
    """Every input copied into fresh per-client outputs, allocated as the engine allocates its own
    (:func:`~fedbip_nvflare.core.blocks.flat_outputs`): the least a call that returns N new updates must do."""
    _, outputs = flat_outputs(vectors[0], len(vectors))
    for out, vector in zip(outputs, vectors):
        for name, t in out.items():
            t.copy_(vector[name])
    return outputs


# Series computed round by round from the variants' times: the floors (see ``run_config``).
FLOORS = {
    "floor": lambda t, s: max(t["copy"], t[f"gram{s}"] + t[f"mix{s}"]),
    "strong_floor": lambda t, s: max(
        FLOORS["floor"](t, s), max(t[f"gram{s}"], t["read"]) + max(t[f"mix{s}"], t["fresh_outputs"])
    ),
}


def floor_series(times: Mapping[str, List[float]]) -> Dict[str, List[float]]:
    """The floors of every round of :func:`interleaved_times`' ``times`` (``_fp32_math`` ones with fp32 parts)."""
    series = {}
    rounds = [dict(zip(times, values)) for values in zip(*times.values())]
    for suffix, parts in (("", ""), ("_fp32_math", "_fp32")):
        if f"gram{parts}" in times:
            for name, floor in FLOORS.items():
                series[name + suffix] = [floor(r, parts) for r in rounds]
    return series


def cell_variants(x: torch.Tensor, vectors: Mapping[str, Mapping[str, torch.Tensor]]) -> Dict[str, Callable[[], Any]]:
    """The timed calls of one cell: the floors' parts on the contiguous ``x`` and on ``vectors``, and ours."""
    y = torch.empty_like(x)
    w = torch.rand(x.shape[0], x.shape[0], dtype=torch.float32, device=x.device)
    w = (w / w.sum(dim=1, keepdim=True)).to(x.dtype)
    rows = list(vectors.values())
    tensors = [t for v in rows for t in v.values()]
    streamed = personalized_aggregate(vectors, streaming=True)
    first = next(iter(vectors))
    variants: Dict[str, Callable[[], Any]] = {
        "copy": lambda: y.copy_(x),
        "gram": lambda: x @ x.T,
        "mix": lambda: torch.mm(w, x, out=y),
    }
    if x.dtype != torch.float32:
        x32, y32, w32 = x.float(), torch.empty(x.shape, device=x.device), w.float()
        variants["gram_fp32"] = lambda: x32 @ x32.T
        variants["mix_fp32"] = lambda: torch.mm(w32, x32, out=y32)
    variants.update(
        {
            "read": lambda: read_inputs(tensors),
            "fresh_outputs": lambda: fresh_outputs(rows),
            "model": lambda: personalized_aggregate(vectors),
            "layer": lambda: personalized_aggregate(vectors, layerwise=True),
            "stream_one": lambda: streamed[first],
        }
    )
    return variants


def run_config(
    n: int,
    d: int,
    dtype_name: str,
    repeats: int,
    pairwise_limit: float,
    stream_clients: int,
    max_spread: float = 0.5,
    max_attempts: int = 3,
) -> Dict[str, Any]:
    """All measurements for one (N, d, dtype).

    The floors' parts, the model-level and layer-wise calls and one streamed client are timed interleaved
    (:func:`stable_times`: ``repeats`` rounds after a warm-up, rerun up to ``max_attempts`` times while a floor's,
    model-level's or layer-wise's spread exceeds ``max_spread``). Per round, two floors:

    - ``floor``: max(copy the contiguous ``[N, d]`` matrix, ``X Xᵀ`` + ``W X`` on it into a preallocated output);
    - ``strong_floor``: what a call that returns N fresh updates from N clients' separately allocated tensors must
      do at least, in two passes since the Gram needs every input before the weights exist: max(``X Xᵀ``, one
      read of the separate inputs) + max(``W X``, the separate inputs copied into fresh per-client outputs); never
      below ``floor`` (both are lower bounds).

    ``_fp32_math`` floors take ``X Xᵀ`` and ``W X`` in fp32 (16-bit inputs only). ``X_s`` is the best round,
    ``X_times_s`` all rounds of the kept attempt, for every variant and floor.
    """
    dtype = DTYPES[dtype_name]
    layout = lora_layout(d)
    params = sum(a * b for a, b in layout.values())
    clients = [f"site-{i + 1}" for i in range(n)]
    x = torch.randn(n, params, dtype=torch.float32, device=DEVICE).to(dtype)
    vectors = split_rows(x, layout, clients)
    element = torch.finfo(dtype).bits // 8
    record: Dict[str, Any] = {
        "clients": n,
        "params": params,
        "tensors": len(layout),
        "hidden": hidden_size(d),
        "dtype": dtype_name,
        "inputs_bytes": n * params * element,
        "outputs_bytes": n * params * element,
    }
    variants = cell_variants(x, vectors)
    checked = ["model", "layer", *FLOORS] + ([f"{f}_fp32_math" for f in FLOORS] if "gram_fp32" in variants else [])
    times, check = stable_times(variants, repeats, max_spread, max_attempts, floor_series, checked)
    del variants, x
    gc.collect()
    for name, values in times.items():
        record[f"{name}_s"] = round(min(values), 7)
        record[f"{name}_times_s"] = [round(t, 7) for t in values]
    record["memory_s"] = record["copy_s"]
    for suffix, parts in (("", ""), ("_fp32", "_fp32")):
        if f"gram{parts}_s" in record:
            record[f"compute{suffix}_s"] = round(record[f"gram{parts}_s"] + record[f"mix{parts}_s"], 7)
    record["model_median_s"] = round(statistics.median(times["model"]), 7)
    record["layer_median_s"] = round(statistics.median(times["layer"]), 7)
    record.update(check)
    for mode, layerwise in (("model", False), ("layer", True)):
        record[f"{mode}_peak_extra_bytes"] = peak_extra_bytes(
            lambda: personalized_aggregate(vectors, layerwise=layerwise)
        )

    streamed = personalized_aggregate(vectors, streaming=True)
    first = clients[0]
    measured = clients[: min(n, stream_clients)]
    start = time.perf_counter()
    for c in measured:
        streamed[c]
    synchronize()
    per_client = (time.perf_counter() - start) / len(measured)
    record["stream_all_s"] = round(per_client * n, 5)
    record["stream_all_extrapolated"] = len(measured) < n
    record["stream_peak_extra_bytes"] = peak_extra_bytes(lambda: streamed[first])

    estimate = 1.5 * n * record["model_s"]  # measured: the flattened loop takes about N times our time
    if estimate <= pairwise_limit:
        record["pairwise_s"] = round(timed(lambda: pairwise_personalized(vectors), 1, warmup=0)["best_s"], 5)
        ours = personalized_aggregate(vectors)
        theirs = pairwise_personalized(vectors)
        record["pairwise_max_abs_diff"] = max(
            float((ours[c][name].float() - theirs[c][name].float()).abs().max()) for c in clients for name in layout
        )
        del ours, theirs
    if estimate * len(layout) / 20 <= pairwise_limit:  # the per-tensor loop adds Python work per pair and tensor
        record["per_tensor_s"] = round(timed(lambda: pairwise_per_tensor(vectors), 1, warmup=0)["best_s"], 5)
    vectors.clear()
    gc.collect()
    return record


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def gib(value: Optional[int]) -> str:
    return f"{value / 2**30:.3f}" if value is not None else "—"


def markdown(records: List[Dict[str, Any]], info: Dict[str, Any]) -> str:
    """The tables of ``aggregation.md``."""
    lines = [
        "# Aggregation scale",
        "",
        f"`{info['command']}` — commit `{info['git_commit']}`, {machine_text(info['machine'])}, torch {info['torch']}, "
        f"{info['threads']} threads, {info['wall_time_s']:.0f} s.",
        "",
        "Times are medians of the interleaved rounds (s; every round in the JSON). floor = max(memory floor, "
        "compute floor) on a contiguous matrix in the inputs' dtype (for bf16, fp32-math in brackets); strong floor = "
        "the Gram pass plus the combine pass into fresh per-client outputs from the separate inputs. Targets: "
        "model-level ≤ 2× floor; ≥ 20× faster than the pairwise loop at N = 32; layer-wise ≤ 1.5× model-level; peak "
        "extra memory ≤ outputs + O(N²). attempts: interleaved runs made (widest spread of the kept one).",
        "",
        "| N | d | dtype | floor | strong floor | model-level | ÷ floor | ÷ strong | layer-wise | layer ÷ model | "
        "flattened pair loop | ÷ ours | per-tensor pair loop | ÷ ours | outputs GiB | peak extra GiB | "
        "stream: 1 client | stream: all N | attempts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        stream_all = f"{r['stream_all_s']:.3f}" + (" (extrap.)" if r["stream_all_extrapolated"] else "")
        pairwise = r.get("pairwise_s")
        med = {
            k: statistics.median(r[f"{k}_times_s"]) for k in ("floor", "strong_floor", "model", "layer", "stream_one")
        }
        fp32 = {
            k: f" ({statistics.median(r[f'{k}_fp32_math_times_s']):.4f})" if r.get(f"{k}_fp32_math_s") else ""
            for k in FLOORS
        }
        cells = [
            str(r["clients"]),
            f"{r['params']:.2e}",
            r["dtype"],
            f"{med['floor']:.4f}{fp32['floor']}",
            f"{med['strong_floor']:.4f}{fp32['strong_floor']}",
            f"{med['model']:.4f}",
            ratio(med["model"], med["floor"]),
            ratio(med["model"], med["strong_floor"]),
            f"{med['layer']:.4f}",
            ratio(med["layer"], med["model"]),
            f"{pairwise:.3f}" if pairwise else "—",
            ratio(pairwise, med["model"]),
            f"{r['per_tensor_s']:.3f}" if r.get("per_tensor_s") else "—",
            ratio(r.get("per_tensor_s"), med["model"]),
            gib(r["outputs_bytes"]),
            gib(r["model_peak_extra_bytes"]),
            f"{med['stream_one']:.4f}",
            stream_all,
            f"{r['attempts']} ({max(r['spread'].values()):.2f})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _median_of(record: Dict[str, Any], key: str) -> float:
    """The median of ``key``'s rounds (``X_s`` → ``X_times_s``) where recorded, else ``record[key]``."""
    rounds = record.get(key[: -len("_s")] + "_times_s")
    return statistics.median(rounds) if rounds else record[key]


def plot(records: List[Dict[str, Any]], path: str) -> None:
    """Median time against N·d per dtype: floors, model-level, layer-wise, streaming all N, pairwise loop (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r["dtype"] for r in records))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    series = [
        ("floor_s", "floor", "k--"),
        ("strong_floor_s", "strong floor", "k:"),
        ("model_s", "model-level", "C0o-"),
        ("layer_s", "layer-wise", "C1s-"),
        ("stream_all_s", "streaming, all N", "C2^:"),
        ("pairwise_s", "pairwise loop", "C3x-"),
    ]
    for ax, dtype in zip(axes[0], dtypes):
        rows = sorted((r for r in records if r["dtype"] == dtype), key=lambda r: (r["clients"], r["params"]))
        for n in sorted({r["clients"] for r in rows}):
            group = [r for r in rows if r["clients"] == n]
            for key, label, style in series:
                points = [(r["clients"] * r["params"], _median_of(r, key)) for r in group if r.get(key)]
                if points:
                    ax.plot(*zip(*points), style, alpha=0.4 + 0.2 * min(3, n // 32), label=f"{label}, N={n}")
        ax.set(xscale="log", yscale="log", xlabel="N·d (numbers aggregated)", ylabel="seconds", title=dtype)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_info(command: str, mmap_threshold_fixed: bool) -> Dict[str, Any]:
    """The ``"info"`` record of ``aggregation.json``: provenance (command, commit, machine) and the run's settings."""
    return {
        **provenance(command),
        "device": str(DEVICE),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mmap_threshold_fixed": mmap_threshold_fixed,
    }


def parse_number(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(value)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=parse_number, nargs="+", default=[8, 32, 128])
    p.add_argument("--params", type=parse_number, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds after a warm-up round (≥ 5)")
    p.add_argument("--max-spread", type=float, default=0.5, help="rerun a cell whose (max − min) / median exceeds this")
    p.add_argument("--max-attempts", type=int, default=3, help="interleaved runs per cell at most (1: no rerun)")
    p.add_argument("--pairwise-limit", type=float, default=120.0, help="skip the pairwise loop above this estimate (s)")
    p.add_argument("--pairwise-max-clients", type=int, default=128, help="run the pair loops only up to this N")
    p.add_argument("--stream-clients", type=int, default=16, help="clients streamed for 'all N' (more: extrapolated)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="where the task vectors live: cpu (default) or cuda")
    p.add_argument("--output", required=True, help="folder for aggregation.json and aggregation.md")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fixed_threshold = fix_mmap_threshold()
    os.makedirs(args.output, exist_ok=True)
    start = time.perf_counter()
    records: List[Dict[str, Any]] = []
    for dtype_name in args.dtypes:
        for d in args.params:
            for n in args.clients:
                limit = args.pairwise_limit if n <= args.pairwise_max_clients else 0.0
                record = run_config(
                    n, d, dtype_name, args.repeats, limit, args.stream_clients, args.max_spread, args.max_attempts
                )
                records.append(record)
                print(json.dumps(record), flush=True)
                with open(os.path.join(args.output, "aggregation.partial.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")
    os.remove(os.path.join(args.output, "aggregation.partial.jsonl"))
    info = run_info(command_line("benchmarks.aggregation", sys.argv[1:] if argv is None else argv), fixed_threshold)
    info["wall_time_s"] = time.perf_counter() - start
    plot(records, os.path.join(args.output, "aggregation.png"))
    text = markdown(records, info) + "\n![time against N·d](aggregation.png)\n"
    write_report(args.output, "aggregation.json", "aggregation.md", {"info": info, "records": records}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
