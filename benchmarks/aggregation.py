"""Aggregation scale: FedBip's server step against the machine's floor and a pairwise-loop implementation.

python -m benchmarks.aggregation --output benchmarks/results/performance            # the committed grid
python -m benchmarks.aggregation --clients 8 --params 1e5 --output /tmp/agg          # a quick look

For every N clients × d parameters × dtype, with task vectors shaped like LoRA adapters (pairs of
``[r, h]`` / ``[h, r]`` tensors, r = 8; h = 768 up to d = 1e6, h = 4096 for larger d, 4 tensors per layer),
it measures in the same process:

- the floor: the larger of the memory floor (copy an ``[N, d]`` matrix: read all inputs and write all outputs
  once) and the compute floor (``X Xᵀ`` plus ``W X`` on contiguous ``X``, the same FLOPs as FedBip), in the
  inputs' dtype and, for 16-bit inputs, also in fp32 (FedBip's math is fp32);
- ``personalized_aggregate`` model-level and layer-wise: median wall time over repeats after a warm-up, and its
  peak extra resident memory (``VmHWM`` after resetting it, minus the resident size before the call) against
  the outputs' size;
- streaming (``streaming=True``): one client's update, and all N one at a time, each dropped after use;
- the pairwise loop of :mod:`benchmarks.pairwise_reference` (model-level, where it fits the time budget), and the
  largest difference between its updates and ours.

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
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from benchmarks.pairwise_reference import pairwise_per_tensor, pairwise_personalized
from benchmarks.reporting import command_line, machine_text, provenance, write_report
from fedbip_nvflare.core import personalized_aggregate

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
    for _ in range(warmup):
        fn()
        synchronize()
        gc.collect()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
        gc.collect()
    return {"median_s": statistics.median(times), "best_s": min(times), "times_s": [round(t, 5) for t in times]}


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


def floor_times(n: int, d: int, dtype: torch.dtype, repeats: int) -> Dict[str, Any]:
    """Memory and compute floors on a contiguous ``[n, d]`` matrix; returns times and the matrix (for reuse)."""
    x = torch.randn(n, d, dtype=torch.float32, device=DEVICE).to(dtype)
    y = torch.empty_like(x)
    w = torch.rand(n, n, dtype=torch.float32, device=DEVICE)
    w = (w / w.sum(dim=1, keepdim=True)).to(dtype)
    memory = timed(lambda: y.copy_(x), repeats)["best_s"]
    gram = timed(lambda: x @ x.T, repeats)["best_s"]
    mix = timed(lambda: torch.mm(w, x, out=y), repeats)["best_s"]
    out = {"memory_s": memory, "compute_s": gram + mix, "floor_s": max(memory, gram + mix)}
    if dtype != torch.float32:
        del y
        x32 = x.float()
        y32 = torch.empty_like(x32)
        w32 = w.float()
        gram32 = timed(lambda: x32 @ x32.T, repeats)["best_s"]
        mix32 = timed(lambda: torch.mm(w32, x32, out=y32), repeats)["best_s"]
        out["compute_fp32_s"] = gram32 + mix32
        out["floor_fp32_math_s"] = max(memory, gram32 + mix32)
        del x32, y32
    out["matrix"] = x
    return out


def run_config(
    n: int, d: int, dtype_name: str, repeats: int, pairwise_limit: float, stream_clients: int
) -> Dict[str, Any]:
    """All measurements for one (N, d, dtype)."""
    dtype = DTYPES[dtype_name]
    layout = lora_layout(d)
    params = sum(a * b for a, b in layout.values())
    clients = [f"site-{i + 1}" for i in range(n)]
    floor = floor_times(n, params, dtype, repeats)
    vectors = split_rows(floor.pop("matrix"), layout, clients)
    gc.collect()
    element = torch.finfo(dtype).bits // 8
    record: Dict[str, Any] = {
        "clients": n,
        "params": params,
        "tensors": len(layout),
        "hidden": hidden_size(d),
        "dtype": dtype_name,
        "inputs_bytes": n * params * element,
        "outputs_bytes": n * params * element,
        **{k: round(v, 7) for k, v in floor.items()},
    }
    for mode, layerwise in (("model", False), ("layer", True)):
        t = timed(lambda: personalized_aggregate(vectors, layerwise=layerwise), repeats)
        record[f"{mode}_s"] = round(t["best_s"], 5)
        record[f"{mode}_median_s"] = round(t["median_s"], 5)
        record[f"{mode}_times_s"] = t["times_s"]
        record[f"{mode}_peak_extra_bytes"] = peak_extra_bytes(
            lambda: personalized_aggregate(vectors, layerwise=layerwise)
        )

    streamed = personalized_aggregate(vectors, streaming=True)
    first = clients[0]
    record["stream_one_s"] = round(timed(lambda: streamed[first], repeats)["best_s"], 5)
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
        "Times are the best of the repeats (s; medians in the JSON: this 2-vCPU VM's timings vary up to 3×). "
        "floor = max(memory floor, compute floor) in the inputs' dtype; for bf16 the "
        "fp32-math floor (FedBip accumulates in fp32) is also given. Targets: model-level ≤ 2× floor; ≥ 20× "
        "faster than the pairwise loop at N = 32; layer-wise ≤ 1.5× model-level; peak extra memory ≤ outputs "
        "+ O(N²).",
        "",
        "| N | d | dtype | floor | fp32-math floor | model-level | ÷ floor | layer-wise | layer ÷ model | "
        "flattened pair loop | ÷ ours | per-tensor pair loop | ÷ ours | outputs GiB | peak extra GiB | "
        "stream: 1 client | stream: all N |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        stream_all = f"{r['stream_all_s']:.3f}" + (" (extrap.)" if r["stream_all_extrapolated"] else "")
        pairwise = r.get("pairwise_s")
        cells = [
            str(r["clients"]),
            f"{r['params']:.2e}",
            r["dtype"],
            f"{r['floor_s']:.4f}",
            f"{r.get('floor_fp32_math_s', r['floor_s']):.4f}",
            f"{r['model_s']:.4f}",
            ratio(r["model_s"], r["floor_s"]),
            f"{r['layer_s']:.4f}",
            ratio(r["layer_s"], r["model_s"]),
            f"{pairwise:.3f}" if pairwise else "—",
            ratio(pairwise, r["model_s"]),
            f"{r['per_tensor_s']:.3f}" if r.get("per_tensor_s") else "—",
            ratio(r.get("per_tensor_s"), r["model_s"]),
            gib(r["outputs_bytes"]),
            gib(r["model_peak_extra_bytes"]),
            f"{r['stream_one_s']:.4f}",
            stream_all,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(records: List[Dict[str, Any]], path: str) -> None:
    """Time against N·d per dtype: floor, model-level, layer-wise, streaming all N, pairwise loop (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r["dtype"] for r in records))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    series = [
        ("floor_s", "floor", "k--"),
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
                points = [(r["clients"] * r["params"], r[key]) for r in group if r.get(key)]
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
    p.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up; the best is reported")
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
                record = run_config(n, d, dtype_name, args.repeats, limit, args.stream_clients)
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
