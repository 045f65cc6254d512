"""Hostile clients: how much weight honest clients give them under each negative-cosine policy and norm bound.

python -m benchmarks.hostile --output DIR
python -m benchmarks.hostile --output DIR --sites site-1 site-2 --n-train 8 --max-length 16 --threads 1

Honest task vectors are real: every honest ``text-tasks`` site loads one :class:`fedbip_nvflare.client.TextSiteTrainer`
(all-MiniLM-L6-v2 + LoRA) from the same θ̄⁰ (:func:`fedbip_nvflare.models.initial_adapter`), trains one local epoch,
and ``τ_i = θ_i − θ̄⁰`` over the federated (LoRA) tensors. Nothing is cached.

One hostile client joins the round with, per kind: ``negation`` (−τ of the target honest client, default site-1),
``scaled`` (50 × that τ), ``noise`` (Gaussian with the median honest norm), ``scaled-noise`` (the same noise, 50 ×
longer); ``copy`` (τ of the target, verbatim) is available as a reference. For every kind, negative-cosine policy
(``clip``, ``keep``, ``keep-bounded``) and norm bound (None, 2.0) the round runs through
:class:`fedbip_nvflare.server.rule.FedBipRule`
(every client sent θ̄⁰, returning θ̄⁰ + τ) twice, with and without the hostile client, and records each honest
client's cosine with and weight on the hostile client, the hostile client's weight on itself, and how far the hostile
client moved each honest model: ``‖θ̄_i(with) − θ̄_i(without)‖ / ‖τ_i‖``.

Writes DIR/hostile.json (raw numbers, settings, git commit) and DIR/hostile.md (the table and what it shows, also
printed). The default run (4 sites, 64 examples, max_length 64, 2 threads) takes about a minute on 2 cores.
"""

import argparse
import logging
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.quality import positive_int  # noqa: E402
from benchmarks.reporting import command_line, provenance, write_report  # noqa: E402
from fedbip_nvflare.core import l2_norm  # noqa: E402
from fedbip_nvflare.server.rule import FedBipRule  # noqa: E402

logger = logging.getLogger("benchmarks.hostile")

Params = Dict[str, torch.Tensor]
HonestFn = Callable[[], Tuple[Params, Dict[str, Params], Dict[str, Any]]]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_SITES = ("site-1", "site-2", "site-3", "site-4")
JSON_FILE = "hostile.json"
MARKDOWN_FILE = "hostile.md"
HOSTILE = "hostile"
SCALE = 50.0
# kind -> (base, scale): base "copy" is the target's τ, "noise" Gaussian noise of the median honest norm.
KINDS: Dict[str, Tuple[str, float]] = {
    "negation": ("copy", -1.0),
    "scaled": ("copy", SCALE),
    "noise": ("noise", 1.0),
    "scaled-noise": ("noise", SCALE),
    "copy": ("copy", 1.0),
}
DEFAULT_KINDS = ("negation", "scaled", "noise", "scaled-noise")
POLICIES = ("clip", "keep", "keep-bounded")
DEFAULT_BOUNDS: Tuple[Optional[float], ...] = (None, 2.0)


def real_task_vectors(
    sites: Sequence[str],
    model: str = DEFAULT_MODEL,
    n_train: int = 64,
    max_length: int = 64,
    epochs: int = 1,
    threads: int = 2,
    batch_size: int = 16,
    seed: int = 0,
) -> Tuple[Params, Dict[str, Params], Dict[str, Any]]:
    """Trains one round on every honest site from the same θ̄⁰ and returns the task vectors.

    Args:
        sites: ``text-tasks`` site names.
        model: HF model id or local folder.
        n_train: Training examples per site.
        max_length: Token truncation length.
        epochs: Local epochs.
        threads: torch CPU threads.
        batch_size: Training batch size.
        seed: Data, θ̄⁰ and training seed.

    Returns:
        ``(θ̄⁰, {site: τ_site}, {site: {task, train_loss, seconds}})``, fp32 tensors over the federated names.
    """
    from fedbip_nvflare.client import TextSiteTrainer, TrainSettings, load_task_data
    from fedbip_nvflare.client.site import to_numpy
    from fedbip_nvflare.models import LoraSettings, initial_adapter, resolve_model_path

    model = resolve_model_path(model)
    theta0 = {n: t.float() for n, t in initial_adapter(model, LoraSettings(), seed=seed).items()}
    settings = TrainSettings(
        local_epochs=epochs, batch_size=batch_size, max_length=max_length, num_threads=threads, seed=seed
    )
    taus: Dict[str, Params] = {}
    meta: Dict[str, Any] = {}
    for site in sites:
        start = time.perf_counter()
        data = load_task_data({"suite": "text-tasks", "n_train": n_train, "n_test": 1, "seed": seed}, site)
        trainer = TextSiteTrainer(model, data, LoraSettings(), settings, device="cpu")
        trainer.set_federated(to_numpy(theta0))
        metrics = trainer.train(round_index=0)
        theta = trainer.get_federated()
        taus[site] = {n: theta[n].float() - theta0[n] for n in theta0}
        meta[site] = {
            "task": data.task,
            "train_loss": float(metrics["train_loss"]),
            "n_examples": int(metrics["n_examples"]),
            "seconds": time.perf_counter() - start,
        }
        logger.info(
            "%s (%s): trained, loss %.4f, |τ| %.4g", site, data.task, meta[site]["train_loss"], l2_norm(taus[site])
        )
        del trainer
    return theta0, taus, meta


def hostile_vector(kind: str, taus: Mapping[str, Params], target: str, seed: int = 0) -> Params:
    """The hostile client's task vector.

    Args:
        kind: A key of :data:`KINDS`.
        taus: ``{honest client: τ}``.
        target: The honest client copied by the ``copy``-based kinds.
        seed: Seed of the noise (the same direction for ``noise`` and ``scaled-noise``).

    Returns:
        ``{name: τ_hostile}``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown hostile kind {kind!r}; choose from {sorted(KINDS)}")
    base, scale = KINDS[kind]
    if base == "copy":
        return {n: scale * t for n, t in taus[target].items()}
    generator = torch.Generator().manual_seed(int(seed))
    noise = {n: torch.randn(t.shape, generator=generator, dtype=torch.float32) for n, t in taus[target].items()}
    norm = l2_norm(noise)
    median = statistics.median(l2_norm(v) for v in taus.values())
    return {n: t * (scale * median / norm) for n, t in noise.items()}


def _round(
    theta0: Params, taus: Mapping[str, Params], negative: str, norm_bound: Optional[float]
) -> Tuple[Dict[str, Params], dict]:
    rule = FedBipRule(negative=negative, norm_bound=norm_bound)
    sent = {c: theta0 for c in taus}
    returned = {c: {n: theta0[n] + t[n] for n in theta0} for c, t in taus.items()}
    return rule.apply(sent, returned, lambda _: theta0)


def _diff_norm(a: Params, b: Params) -> float:
    return l2_norm({n: a[n].float() - b[n].float() for n in a})


def evaluate(
    theta0: Params,
    taus: Mapping[str, Params],
    hostile: Params,
    negative: str,
    norm_bound: Optional[float],
) -> Dict[str, Any]:
    """One round with and without the hostile client under one policy and norm bound.

    Args:
        theta0: The parameters every client was sent.
        taus: ``{honest client: τ}``.
        hostile: The hostile client's τ.
        negative: Negative-cosine policy.
        norm_bound: The rule's norm bound (None: none).

    Returns:
        Per honest client: ``cosine`` with and ``weight`` on the hostile client, ``displacement`` (absolute) and
        ``relative_displacement`` (over ‖τ_i‖), ``self_only`` (every other weight in its row is 0); and
        ``hostile_self_weight``, ``hostile_self_only``, ``hostile_scale`` (the norm bound's scale, 1 if unclipped),
        the median norms with and without the hostile client, the full weight and similarity matrices.
    """
    with_hostile = {**taus, HOSTILE: hostile}
    thetas, record = _round(theta0, with_hostile, negative, norm_bound)
    thetas_honest, record_honest = _round(theta0, taus, negative, norm_bound)
    clients = record["clients"]
    h = clients.index(HOSTILE)
    weights, similarity = record["weights"], record["similarity"]
    honest: Dict[str, Any] = {}
    for c in taus:
        i = clients.index(c)
        displacement = _diff_norm(thetas[c], thetas_honest[c])
        row = weights[i]
        honest[c] = {
            "cosine": similarity[i][h],
            "weight": row[h],
            "weight_row_l1": sum(abs(w) for w in row),
            "self_only": row[i] == 1.0 and all(w == 0.0 for j, w in enumerate(row) if j != i),
            "displacement": displacement,
            "relative_displacement": displacement / max(l2_norm(taus[c]), 1e-30),
        }
    hostile_row = weights[h]
    return {
        "negative": negative,
        "norm_bound": norm_bound,
        "honest": honest,
        "hostile_self_weight": hostile_row[h],
        "hostile_self_only": hostile_row[h] == 1.0 and all(w == 0.0 for j, w in enumerate(hostile_row) if j != h),
        "hostile_scale": record.get("clipped", {}).get(HOSTILE, 1.0),
        "clipped_honest": {c: s for c, s in record.get("clipped", {}).items() if c != HOSTILE},
        "median_norm": statistics.median(l2_norm(v) for v in with_hostile.values()),
        "median_norm_honest": statistics.median(l2_norm(v) for v in taus.values()),
        "clients": clients,
        "weights": weights,
        "similarity": similarity,
        "weights_honest_only": record_honest["weights"],
    }


def summarize(case: Mapping[str, Any]) -> Dict[str, float]:
    """min/mean/max of the honest weights on the hostile client and of the relative displacements."""
    w = [v["weight"] for v in case["honest"].values()]
    d = [v["relative_displacement"] for v in case["honest"].values()]
    return {
        "weight_min": min(w),
        "weight_mean": statistics.fmean(w),
        "weight_max": max(w),
        "displacement_mean": statistics.fmean(d),
        "displacement_max": max(d),
    }


def run_cases(
    theta0: Params,
    taus: Mapping[str, Params],
    kinds: Sequence[str] = DEFAULT_KINDS,
    policies: Sequence[str] = POLICIES,
    bounds: Sequence[Optional[float]] = DEFAULT_BOUNDS,
    target: Optional[str] = None,
    seed: int = 0,
) -> List[Dict[str, Any]]:
    """Every hostile kind × policy × norm bound (see :func:`evaluate`), each with its :func:`summarize`.

    Args:
        theta0: The parameters every client was sent.
        taus: ``{honest client: τ}`` (at least one).
        kinds: Hostile kinds (keys of :data:`KINDS`).
        policies: Negative-cosine policies.
        bounds: Norm bounds (None: none).
        target: The honest client the copy-based kinds copy (default: the first).
        seed: Seed of the noise.

    Returns:
        One dict per case: ``kind``, ``target``, ``hostile_norm`` and :func:`evaluate`'s fields plus ``summary``.
    """
    target = target or next(iter(taus))
    if target not in taus:
        raise ValueError(f"target {target!r} is not an honest client ({sorted(taus)})")
    cases = []
    for kind in kinds:
        hostile = hostile_vector(kind, taus, target, seed)
        for negative in policies:
            for bound in bounds:
                case = {"kind": kind, "target": target, "hostile_norm": l2_norm(hostile)}
                case.update(evaluate(theta0, taus, hostile, negative, bound))
                case["summary"] = summarize(case)
                cases.append(case)
    return cases


def _bound(value: Optional[float]) -> str:
    return "none" if value is None else f"{value:g}"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3f}"


def findings(cases: Sequence[Mapping[str, Any]]) -> List[str]:
    """Sentences on what the cases show, computed from their numbers."""
    lines: List[str] = []
    for policy in dict.fromkeys(c["negative"] for c in cases):
        mine = [c for c in cases if c["negative"] == policy]
        pairs = [(c["kind"], name, v) for c in mine for name, v in c["honest"].items()]
        top = max(pairs, key=lambda p: p[2]["weight"])
        low = min(pairs, key=lambda p: p[2]["weight"])
        negative_cos = [p for p in pairs if p[2]["cosine"] < 0]
        zero = [p for p in negative_cos if p[2]["weight"] == 0.0]
        text = (
            f"With `{policy}`, the largest weight an honest client gives a hostile one is {_fmt(top[2]['weight'])} "
            f"({top[1]} on {top[0]}, cosine {_fmt(top[2]['cosine'])}); the smallest is {_fmt(low[2]['weight'])} "
            f"({low[1]} on {low[0]}). {len(zero)} of the {len(negative_cos)} (case, honest client) pairs with a "
            "negative cosine give exactly 0 weight"
        )
        alone = sorted({f"{name} ({c['kind']})" for c in mine for name, v in c["honest"].items() if v["self_only"]})
        if alone:
            text += f"; honest rows left with their own update only (all other weights 0): {', '.join(alone)}"
        largest = max(pairs, key=lambda p: p[2]["weight_row_l1"])
        text += (
            f". The largest Σ|p_ik| of an honest row is {_fmt(largest[2]['weight_row_l1'])} ({largest[1]}, "
            f"{largest[0]})."
        )
        own = [c["hostile_self_weight"] for c in mine]
        text += f" The hostile client's weight on itself ranges from {_fmt(min(own))} to {_fmt(max(own))}."
        lines.append(text)
    bounds = list(dict.fromkeys(c["norm_bound"] for c in cases))
    if None in bounds and len(bounds) > 1:
        for bound in (b for b in bounds if b is not None):
            for kind in dict.fromkeys(c["kind"] for c in cases):
                for policy in dict.fromkeys(c["negative"] for c in cases):
                    free = [c for c in cases if (c["kind"], c["negative"], c["norm_bound"]) == (kind, policy, None)]
                    bounded = [c for c in cases if (c["kind"], c["negative"], c["norm_bound"]) == (kind, policy, bound)]
                    if not free or not bounded:
                        continue
                    a, b = free[0]["summary"]["displacement_max"], bounded[0]["summary"]["displacement_max"]
                    if a > 1.5 * b:
                        lines.append(
                            f"`{kind}` under `{policy}`: norm bound {bound:g} cuts the largest relative displacement "
                            f"from {_fmt(a)} to {_fmt(b)} (hostile τ scaled by {_fmt(bounded[0]['hostile_scale'])})."
                        )
                    elif b >= 0.99 * a and b > 1.0 and bounded[0]["hostile_scale"] == 1.0:
                        lines.append(
                            f"`{kind}` under `{policy}`: the norm bound {bound:g} does not help (the hostile τ is "
                            f"within {bound:g}× the median norm, so it is not clipped); the largest relative "
                            f"displacement stays {_fmt(b)}, caused by the weights, not the length."
                        )
                    elif b > 1.5 * a:
                        lines.append(
                            f"`{kind}` under `{policy}`: norm bound {bound:g} raises the largest relative "
                            f"displacement from {_fmt(a)} to {_fmt(b)}."
                        )
    by_key = {(c["kind"], c["negative"], c["norm_bound"]): c for c in cases}
    for small, large in (("noise", "scaled-noise"), ("copy", "scaled")):
        diffs = [
            abs(v["weight"] - by_key[(large, p, b)]["honest"][name]["weight"])
            for (k, p, b), c in by_key.items()
            if k == small and (large, p, b) in by_key
            for name, v in c["honest"].items()
        ]
        if diffs:
            lines.append(
                f"Cosines are scale-free: `{large}` gets weights within {_fmt(max(diffs))} of `{small}`'s (same "
                f"direction, {SCALE:g}× longer); only the displacement differs."
            )
    return lines


def markdown(info: Mapping[str, Any]) -> str:
    """The table (hostile kind × policy × norm bound) and the findings."""
    s = info["settings"]
    described = ", ".join(f"{c} ({m.get('task', '?')}, |τ| {_fmt(m['norm'])})" for c, m in info["honest"].items())
    lines = [
        "# Hostile clients",
        "",
        f"`{info['command']}`; commit {info['git_commit']}; wall time {info.get('wall_time_s', float('nan')):.1f}s.",
        f"Honest clients: {described}; {s.get('n_train', '?')} examples, max_length {s.get('max_length', '?')}, "
        f"{s.get('epochs', '?')} local epoch(s) from the same θ̄⁰. Hostile kinds copy {info['target']}'s τ "
        f"(negation: −1×, scaled: {SCALE:g}×) or are Gaussian noise of the median honest norm (noise: 1×, "
        f"scaled-noise: {SCALE:g}×).",
        "weight: honest client's weight p_i,hostile (min / mean / max over honest clients); self: the hostile "
        "client's weight on itself; displacement: ‖θ̄_i(with hostile) − θ̄_i(without)‖ / ‖τ_i‖; clip scale: the "
        "norm bound's scale of the hostile τ.",
        "",
        "| hostile | policy | norm bound | cosine min / max | weight min | weight mean | weight max | self "
        "| displacement mean | displacement max | clip scale |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in info["cases"]:
        sm = c["summary"]
        cos = [v["cosine"] for v in c["honest"].values()]
        lines.append(
            f"| {c['kind']} | {c['negative']} | {_bound(c['norm_bound'])} | {_fmt(min(cos))} / {_fmt(max(cos))} "
            f"| {_fmt(sm['weight_min'])} | {_fmt(sm['weight_mean'])} | {_fmt(sm['weight_max'])} "
            f"| {_fmt(c['hostile_self_weight'])} | {_fmt(sm['displacement_mean'])} | {_fmt(sm['displacement_max'])} "
            f"| {_fmt(c['hostile_scale'])} |"
        )
    lines += ["", *(f"* {line}" for line in findings(info["cases"]))]
    return "\n".join(lines) + "\n"


def run(
    output: str,
    honest_fn: HonestFn,
    kinds: Sequence[str] = DEFAULT_KINDS,
    policies: Sequence[str] = POLICIES,
    bounds: Sequence[Optional[float]] = DEFAULT_BOUNDS,
    target: Optional[str] = None,
    seed: int = 0,
    settings: Optional[Mapping[str, Any]] = None,
    command: str = "",
) -> Dict[str, Any]:
    """Gets the honest task vectors from ``honest_fn``, runs every case and writes DIR/hostile.{json,md}.

    Args:
        output: Output folder.
        honest_fn: Returns ``(θ̄⁰, {honest client: τ}, {client: meta})``; :func:`real_task_vectors` by default in
            :func:`main`, synthetic vectors in tests.
        kinds: Hostile kinds.
        policies: Negative-cosine policies.
        bounds: Norm bounds (None: none).
        target: The honest client the copy-based kinds copy (default: the first).
        seed: Seed of the noise.
        settings: Settings to record.
        command: The command line to record.

    Returns:
        The information written to DIR/hostile.json.
    """
    start = time.perf_counter()
    theta0, taus, meta = honest_fn()
    train_s = time.perf_counter() - start
    target = target or next(iter(taus))
    cases = run_cases(theta0, taus, kinds, policies, bounds, target, seed)
    info: Dict[str, Any] = {
        **provenance(command),
        "settings": {
            **dict(settings or {}),
            "kinds": list(kinds),
            "policies": list(policies),
            "bounds": list(bounds),
            "noise_seed": seed,
        },
        "target": target,
        "honest": {c: {**dict(meta.get(c, {})), "norm": l2_norm(t)} for c, t in taus.items()},
        "n_parameters": sum(t.numel() for t in theta0.values()),
        "cases": cases,
        "train_s": train_s,
        "wall_time_s": time.perf_counter() - start,
    }
    write_report(output, JSON_FILE, MARKDOWN_FILE, info, markdown(info))
    return info


def _bound_arg(text: str) -> Optional[float]:
    if text.lower() == "none":
        return None
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a norm bound must be > 0 or 'none', got {text}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="output folder DIR")
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF model id or local folder")
    p.add_argument("--sites", nargs="+", default=list(DEFAULT_SITES), help="honest text-tasks sites")
    p.add_argument("--target", default=None, help="honest site the copy-based kinds copy (default: the first)")
    p.add_argument("--n-train", type=positive_int, default=64, help="training examples per honest site")
    p.add_argument("--max-length", type=positive_int, default=64)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    p.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(DEFAULT_KINDS))
    p.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    p.add_argument("--bounds", nargs="+", type=_bound_arg, default=list(DEFAULT_BOUNDS), help="'none' or a number")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.target is not None and args.target not in args.sites:
        p.error(f"--target {args.target} is not one of --sites")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark and prints the table; returns 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    settings = {
        "model": args.model,
        "sites": args.sites,
        "n_train": args.n_train,
        "max_length": args.max_length,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "seed": args.seed,
    }

    def honest() -> Tuple[Params, Dict[str, Params], Dict[str, Any]]:
        return real_task_vectors(
            args.sites, args.model, args.n_train, args.max_length, args.epochs, args.threads, args.batch_size, args.seed
        )

    try:
        info = run(
            os.path.abspath(args.output),
            honest,
            kinds=args.kinds,
            policies=args.policies,
            bounds=args.bounds,
            target=args.target,
            seed=args.seed,
            settings=settings,
            command=command_line("benchmarks.hostile", argv),
        )
    finally:
        torch.set_num_threads(threads_before)
    print(markdown(info))
    return 0 if all(math.isfinite(c["summary"]["displacement_max"]) for c in info["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
