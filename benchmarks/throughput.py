"""Client training throughput: examples/s of the real site trainer, per device, precision, length and threads.

python -m benchmarks.throughput --output DIR
python -m benchmarks.throughput --output DIR --max-lengths 128 --threads 2 --precisions bf16 --rounds 6

For every configuration (device x precision x max_length x torch threads; threads only on CPU) the benchmark loads
one :class:`fedbip_nvflare.client.TextSiteTrainer` (all-MiniLM-L6-v2 + LoRA, the site's ``text-tasks`` data) and
runs ``--rounds`` rounds on that one model, each round as a site runs it: load the received federated tensors
(numpy, as NVFlare delivers them; round 1 gets the server's θ̄⁰, later rounds the previous round's result), train
one local epoch, export the tensors to numpy. Round 1 is the warm-up (first-call costs: allocator, oneDNN/cuBLAS
kernels) and is reported but left out of the throughput; examples/s is the mean over rounds 2+ of the examples
counted going through the model's forward in training mode divided by the round's training wall time. The model
load (weights, tokenizer, tokenising the split) is timed separately, once per configuration.

CPU precisions: ``fp32`` and ``bf16`` (``torch.autocast`` to bfloat16, the trainer's ``precision="bf16"``; fast on
CPUs with avx512_bf16/AMX). CUDA runs (fp32 and bf16) are added when ``torch.cuda.is_available()``, with
``--gpu-n-train`` examples per round. Writes DIR/throughput.json (raw per-round numbers, settings, versions, CPU
count, git commit) and DIR/throughput.md (the table, also printed). The default CPU grid takes about 2 to 3 minutes
on 2 cores.
"""

import argparse
import gc
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.quality import positive_int  # noqa: E402
from benchmarks.reporting import command_line, provenance, write_report  # noqa: E402
from fedbip_nvflare.client import TextSiteTrainer, TrainSettings, load_task_data  # noqa: E402
from fedbip_nvflare.client.site import to_numpy  # noqa: E402
from fedbip_nvflare.models import LoraSettings, initial_adapter, resolve_model_path  # noqa: E402

logger = logging.getLogger("benchmarks.throughput")

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
JSON_FILE = "throughput.json"
MARKDOWN_FILE = "throughput.md"


@dataclass(frozen=True)
class Config:
    """One measured configuration.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"`` or ``"bf16"`` (the trainer's ``precision``).
        max_length: Token truncation length.
        threads: torch CPU threads (None on CUDA: torch's default).
        n_train: Training examples per round.
    """

    device: str
    precision: str
    max_length: int
    threads: Optional[int]
    n_train: int


def grid(
    devices: Sequence[str],
    precisions: Sequence[str],
    max_lengths: Sequence[int],
    threads: Sequence[int],
    n_train: int,
    gpu_n_train: int,
) -> List[Config]:
    """The configurations to measure, CPU first (threads vary on CPU only)."""
    configs = []
    for device in devices:
        for precision in precisions:
            for max_length in max_lengths:
                if device == "cpu":
                    configs += [Config(device, precision, max_length, t, n_train) for t in threads]
                else:
                    configs.append(Config(device, precision, max_length, None, gpu_n_train))
    return configs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frozen_weight(model: torch.nn.Module) -> torch.Tensor:
    """A frozen pre-trained weight of the backbone (to check it is neither reloaded nor copied between rounds)."""
    return next(p for n, p in model.backbone.named_parameters() if not p.requires_grad and n.endswith("weight"))


def measure(
    config: Config,
    model: str,
    rounds: int,
    batch_size: int,
    site: str = "site-1",
    seed: int = 0,
    theta0: Optional[Mapping[str, np.ndarray]] = None,
) -> Dict[str, Any]:
    """Loads one trainer for ``config`` and runs ``rounds`` rounds of receive → train → export on it.

    Args:
        config: The configuration.
        model: HF model id or local folder.
        rounds: Rounds on the one loaded model (>= 2: round 1 is the warm-up).
        batch_size: Training batch size.
        site: The ``text-tasks`` site whose data is used (site-1: bbc-news, long articles, so every batch is
            ``max_length`` tokens wide).
        seed: Data and training seed.
        theta0: The received tensors of round 1 (default: the server's θ̄⁰ for ``seed``).

    Returns:
        The configuration, load times, one dict per round (``receive_s``, ``train_s``, ``export_s``,
        ``examples_counted``, ``n_examples`` and ``examples_per_s`` as the trainer reports them, ``train_loss``)
        and the summary: ``examples_per_s`` (mean over rounds 2+), ``round1_train_s``, ``steady_train_s``,
        ``receive_ms``, ``export_ms``, ``same_model`` (one model object across rounds), ``frozen_unchanged``
        (a frozen weight keeps its storage), ``logits_dtype``.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (round 1 is the warm-up), got {rounds}")
    device = torch.device(config.device)
    start = time.perf_counter()
    data = load_task_data({"suite": "text-tasks", "n_train": config.n_train, "n_test": 1, "seed": seed}, site)
    data_s = time.perf_counter() - start
    settings = TrainSettings(
        batch_size=batch_size,
        max_length=config.max_length,
        num_threads=config.threads,
        seed=seed,
        precision=config.precision,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trainer = TextSiteTrainer(model, data, LoraSettings(), settings, device=config.device)
    _sync(device)
    load_s = time.perf_counter() - start
    tokens = trainer.tokenizer(list(data.train.texts), truncation=True, max_length=config.max_length)["input_ids"]
    counted = {"examples": 0, "dtype": None}

    def count(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.training:
            counted["examples"] += int(args[0].shape[0])
            counted["dtype"] = str(output.dtype).replace("torch.", "")

    hook = trainer.model.register_forward_hook(count)
    model_object, frozen = trainer.model, _frozen_weight(trainer.model)
    frozen_ptr = frozen.data_ptr()
    received = dict(theta0) if theta0 is not None else to_numpy(initial_adapter(model, LoraSettings(), seed=seed))
    per_round: List[Dict[str, Any]] = []
    try:
        for r in range(rounds):
            counted["examples"] = 0
            t0 = time.perf_counter()
            trainer.set_federated(received)
            _sync(device)
            t1 = time.perf_counter()
            metrics = trainer.train(round_index=r)
            _sync(device)
            t2 = time.perf_counter()
            received = to_numpy(trainer.get_federated())
            t3 = time.perf_counter()
            per_round.append(
                {
                    "round": r + 1,
                    "receive_s": t1 - t0,
                    "train_s": t2 - t1,
                    "export_s": t3 - t2,
                    "examples_counted": counted["examples"],
                    "n_examples": int(metrics["n_examples"]),
                    "trainer_examples_per_s": metrics["examples_per_s"],
                    "train_loss": metrics["train_loss"],
                    "examples_per_s": counted["examples"] / (t2 - t1),
                    "same_model": trainer.model is model_object,
                }
            )
            logger.info(
                "%s %s len %d threads %s round %d: %.2f examples/s (train %.2fs, receive %.1fms, export %.1fms)",
                config.device,
                config.precision,
                config.max_length,
                config.threads,
                r + 1,
                per_round[-1]["examples_per_s"],
                t2 - t1,
                (t1 - t0) * 1e3,
                (t3 - t2) * 1e3,
            )
    finally:
        hook.remove()
    steady = per_round[1:]
    result: Dict[str, Any] = {
        "config": asdict(config),
        "torch_threads": torch.get_num_threads(),
        "task": data.task,
        "batch_size": batch_size,
        "mean_tokens": float(np.mean([len(t) for t in tokens])),
        "data_s": data_s,
        "load_s": load_s,
        "rounds": per_round,
        "examples_per_s": float(np.mean([r["examples_per_s"] for r in steady])),
        "examples_per_s_std": float(np.std([r["examples_per_s"] for r in steady])),
        "round1_train_s": per_round[0]["train_s"],
        "steady_train_s": float(np.mean([r["train_s"] for r in steady])),
        "receive_ms": 1e3 * float(np.mean([r["receive_s"] for r in per_round])),
        "export_ms": 1e3 * float(np.mean([r["export_s"] for r in per_round])),
        "same_model": all(r["same_model"] for r in per_round),
        "frozen_unchanged": _frozen_weight(trainer.model) is frozen and frozen.data_ptr() == frozen_ptr,
        "logits_dtype": counted["dtype"],
        "status": "ok",
    }
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def environment() -> Dict[str, Any]:
    """Versions, CPU (with its bf16 instructions) and GPU of this machine; the commit is in :func:`provenance`."""
    import peft
    import transformers

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_bf16": [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()],
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _cell(value: Optional[float], digits: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown(info: Mapping[str, Any]) -> str:
    """The results table (one row per configuration) with the settings it was measured under."""
    env = info["environment"]
    lines = [
        "# Client training throughput",
        "",
        f"`{info['command']}`; torch {env['torch']}, {env['cpus_usable']} usable CPUs"
        + (f", GPU {env['gpu']}" if env.get("gpu") else "")
        + f", commit {info['git_commit']}.",
        f"Model {info['settings']['model']} + LoRA (r=8, query/value); task {info.get('task', '?')}; batch size "
        f"{info['settings']['batch_size']}; {info['settings']['rounds']} rounds per loaded model, round 1 is the "
        "warm-up. examples/s: mean over rounds 2+ (± std) of examples counted through the training forward / "
        "training wall time. receive / export: loading the received numpy tensors into the model / exporting them.",
        "",
        "| device | precision | max_len | threads | tokens/ex | load s | round 1 train s | round 2+ train s "
        "| examples/s | receive ms | export ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in info["results"]:
        c = r["config"]
        if r["status"] != "ok":
            lines.append(f"| {c['device']} | {c['precision']} | {c['max_length']} | {c['threads'] or '—'} | failed |")
            continue
        lines.append(
            f"| {c['device']} | {c['precision']} | {c['max_length']} | {c['threads'] or r['torch_threads']} "
            f"| {_cell(r['mean_tokens'], 0)} | {_cell(r['load_s'], 2)} | {_cell(r['round1_train_s'], 2)} "
            f"| {_cell(r['steady_train_s'], 2)} "
            f"| {_cell(r['examples_per_s'], 1)} ± {_cell(r['examples_per_s_std'], 1)} "
            f"| {_cell(r['receive_ms'], 1)} | {_cell(r['export_ms'], 1)} |"
        )
    failed = [r for r in info["results"] if r["status"] != "ok"]
    if failed:
        lines += ["", *(f"* failed: {r['config']}: {r['error']}" for r in failed)]
    return "\n".join(lines) + "\n"


def write(output: str, info: Mapping[str, Any]) -> str:
    """Writes DIR/throughput.json and DIR/throughput.md; returns the markdown."""
    return write_report(output, JSON_FILE, MARKDOWN_FILE, info, markdown(info))


def run(
    output: str,
    configs: Sequence[Config],
    model: str = DEFAULT_MODEL,
    rounds: int = 4,
    batch_size: int = 16,
    site: str = "site-1",
    seed: int = 0,
    command: str = "",
) -> Dict[str, Any]:
    """Measures every configuration (a failing one is recorded and the others go on) and writes the results.

    The files are rewritten after each configuration, so an interrupted run keeps what it measured.

    Returns:
        The information written to DIR/throughput.json.
    """
    threads_before = torch.get_num_threads()
    model_id, model = model, resolve_model_path(model)  # a known hub id's packaged offline copy, as the server does
    theta0 = to_numpy(initial_adapter(model, LoraSettings(), seed=seed))
    info: Dict[str, Any] = {
        **provenance(command),
        "settings": {
            "model": model_id,
            "model_path": model,
            "rounds": rounds,
            "batch_size": batch_size,
            "site": site,
            "seed": seed,
        },
        "environment": environment(),
        "results": [],
    }
    start = time.perf_counter()
    try:
        for config in configs:
            try:
                result = measure(config, model, rounds, batch_size, site=site, seed=seed, theta0=theta0)
                info["task"] = result["task"]
            except Exception as e:  # noqa: BLE001 - record it and measure the other configurations
                logger.exception("configuration %s failed", config)
                result = {"config": asdict(config), "status": "failed", "error": f"{type(e).__name__}: {e}"}
            info["results"].append(result)
            info["wall_time_s"] = time.perf_counter() - start
            write(output, info)
            gc.collect()
    finally:
        torch.set_num_threads(threads_before)
    return info


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="output folder DIR")
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF model id or local folder")
    p.add_argument("--site", default="site-1", help="text-tasks site whose data is trained on (site-1: bbc-news)")
    p.add_argument("--n-train", type=positive_int, default=64, help="training examples per round on CPU")
    p.add_argument("--gpu-n-train", type=positive_int, default=2000, help="training examples per round on CUDA")
    p.add_argument("--rounds", type=int, default=4, help="rounds per loaded model (>= 2; round 1 is the warm-up)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--max-lengths", type=positive_int, nargs="+", default=[64, 128])
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2], help="torch CPU threads (CPU runs)")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument(
        "--devices", nargs="+", choices=["cpu", "cuda"], default=None, help="default: cpu, and cuda if available"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (round 1 is the warm-up)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark and prints the table.

    Returns:
        0 if every configuration was measured, 1 if any failed.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: --devices cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    configs = grid(devices, args.precisions, args.max_lengths, args.threads, args.n_train, args.gpu_n_train)
    info = run(
        os.path.abspath(args.output),
        configs,
        model=args.model,
        rounds=args.rounds,
        batch_size=args.batch_size,
        site=args.site,
        seed=args.seed,
        command=command_line("benchmarks.throughput", argv),
    )
    print(markdown(info))
    return 0 if all(r["status"] == "ok" for r in info["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
