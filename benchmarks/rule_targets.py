"""Issue 21's targets for a candidate rule, checked on every suite, generated from committed quality-benchmark results.

python -m benchmarks.rule_targets --method fedbip-own-check benchmarks/results/text-tasks ...
python -m benchmarks.rule_targets --method fedbip-own-check DIR ... --seeds 1 2 --write benchmarks/results/README.md

Per suite folder (``benchmarks.quality``'s output), over the seeds the candidate ran (or ``--seeds``), with each
site's final score × 100 in the suite's own metric (ROUGE-1 on the Flan suites, as the paper's group scores them;
elsewhere accuracy, exact match for generative suites), mean over clients then over seeds:

- **bar**: the best other method − 0.5. Other methods are every method that ran all those seeds, except the
  candidate and ``oracle-groups`` (the ceiling, not a competitor). A method with fewer seeds is left out, so a
  selection variant run at one seed competes only where the candidate is judged at that seed alone.
- **worst client**: per seed the minimum over clients of (candidate − Local), averaged over seeds; target ≥ −1.
- **oracle share**: where partners exist (a ground-truth group with two or more sites), the candidate's gain over
  Local as a share of ``oracle-groups``' gain; target ≥ 75 %.
- **room**: a suite is evidence only where LoRA adds ≥ 2 over the probe (zero-shot for generative suites) and, where
  partners exist, the oracle adds ≥ 1 over Local; otherwise the row says which is missing.
- **A/A** (where the folder holds ``local-reseeded`` at those seeds): Local run again with another training seed on
  the same data, against Local: its mean and worst-client Δ, computed as the candidate's are, are what a method no
  better and no worse than Local scores by chance. A target tighter than them cannot be told from noise.

``--write`` replaces the text between ``<!-- rule-targets:METHOD:begin -->`` and ``<!-- rule-targets:METHOD:end -->``
(one pair per candidate, so a page can hold several).
"""

import os
import statistics
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks.paper_table import outputs_exist, publish, suite_name, table_parser
from benchmarks.summary import load_runs, read_benchmark

CEILING = "oracle-groups"
NOISE_CONTROL = "local-reseeded"  # Local with another training seed: the A/A noise, not a competitor
BASELINES = ("probe", "zero-shot")  # what LoRA must beat by MIN_LORA_GAIN for the suite to have room
MARGIN = 0.5  # the candidate must be within this of the best other method
MIN_WORST_CLIENT = -1.0
MIN_ORACLE_SHARE = 0.75
MIN_LORA_GAIN = 2.0
MIN_ORACLE_GAIN = 1.0
# Each suite's own metric: the Flan suites are scored as the paper's group scores them (ROUGE-1); others by accuracy
# (exact match for generative suites), the results' "accuracy".
SUITE_METRICS = {"flan-8": "rouge1", "flan-pairs": "rouge1"}
METRIC_NAMES = {"accuracy": "accuracy", "rouge1": "ROUGE-1"}

Scores = Dict[int, Dict[str, float]]  # {seed: {site: metric × 100}}


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scores(runs: Dict[str, Dict[int, dict]], method: str, metric: str) -> Scores:
    return {
        seed: {s: 100 * float(c[metric]) for s, c in r["clients"].items() if _number(c.get(metric))}
        for seed, r in runs.get(method, {}).items()
    }


def _mean(scores: Scores, seeds: Sequence[int]) -> float:
    return statistics.mean(statistics.mean(scores[s].values()) for s in seeds)


def _worst_client(scores: Scores, local: Scores, seeds: Sequence[int]) -> float:
    """Per seed the minimum over clients of (score − Local), averaged over ``seeds``."""
    return statistics.mean(min(scores[s][c] - local[s][c] for c in scores[s] if c in local[s]) for s in seeds)


@dataclass
class SuiteTargets:
    """One suite's check of the candidate (means over ``seeds``; ``None`` where a reference did not run)."""

    suite: str
    metric: str
    seeds: List[int]
    candidate: float
    local: Optional[float]
    best_other: Optional[str]
    best_other_score: Optional[float]
    worst_client: Optional[float]
    partners: bool
    oracle: Optional[float]
    lora_gain: Optional[float]
    aa_mean: Optional[float] = None
    aa_worst: Optional[float] = None

    @property
    def bar_met(self) -> Optional[bool]:
        return None if self.best_other_score is None else self.candidate >= self.best_other_score - MARGIN

    @property
    def oracle_share(self) -> Optional[float]:
        if not self.partners or self.oracle is None or self.local is None or self.oracle <= self.local:
            return None
        return (self.candidate - self.local) / (self.oracle - self.local)

    def room(self) -> str:
        """ "yes", or what the suite lacks to be evidence either way."""
        missing = []
        if self.lora_gain is not None and self.lora_gain < MIN_LORA_GAIN:
            missing.append(f"LoRA adds {self.lora_gain:+.1f}")
        if self.partners and self.oracle is not None and self.local is not None:
            if self.oracle - self.local < MIN_ORACLE_GAIN:
                missing.append(f"oracle adds {self.oracle - self.local:+.1f}")
        return "yes" if not missing else "no: " + ", ".join(missing)


def suite_targets(output: str, method: str, seeds: Optional[Sequence[int]] = None) -> Optional[SuiteTargets]:
    """The candidate ``method``'s targets on one benchmark folder, over ``seeds`` (default: every seed it ran).

    Returns:
        None where the candidate did not run any of those seeds.
    """
    info = read_benchmark(output)
    runs = load_runs(output, info.get("runs", []))
    suite = suite_name(output)
    metric = SUITE_METRICS.get(suite, "accuracy")
    scores = {m: _scores(runs, m, metric) for m in runs}
    ran = sorted(s for s in scores.get(method, {}) if scores[method][s] and (seeds is None or s in seeds))
    if not ran:
        return None

    def mean_of(m: str) -> Optional[float]:
        return _mean(scores[m], ran) if m in scores and all(scores[m].get(s) for s in ran) else None

    others = {m: mean_of(m) for m in scores if m not in (method, CEILING, NOISE_CONTROL)}
    others = {m: v for m, v in others.items() if v is not None}
    best = max(others, key=lambda m: others[m]) if others else None
    local = mean_of("local")
    aa = mean_of(NOISE_CONTROL)
    groups = info.get("groups") or {}
    sizes = [list(groups.values()).count(g) for g in set(groups.values())]
    baseline = next((mean_of(b) for b in BASELINES if mean_of(b) is not None), None)
    return SuiteTargets(
        suite=suite,
        metric=metric,
        seeds=ran,
        candidate=_mean(scores[method], ran),
        local=local,
        best_other=best,
        best_other_score=others.get(best) if best else None,
        worst_client=None if local is None else _worst_client(scores[method], scores["local"], ran),
        partners=any(n >= 2 for n in sizes),
        oracle=mean_of(CEILING),
        lora_gain=None if local is None or baseline is None else local - baseline,
        aa_mean=None if local is None or aa is None else aa - local,
        aa_worst=None if local is None or aa is None else _worst_client(scores[NOISE_CONTROL], scores["local"], ran),
    )


def _yes_no(met: Optional[bool]) -> str:
    return "–" if met is None else ("**yes**" if met else "no")


def _row(t: SuiteTargets) -> List[str]:
    delta = "–" if t.local is None else f"{t.candidate - t.local:+.1f}"
    best = "–" if t.best_other is None else f"{t.best_other} {t.best_other_score:.1f}"
    bar = "–" if t.best_other_score is None else f"{t.best_other_score - MARGIN:.1f}"
    worst = "–" if t.worst_client is None else f"{t.worst_client:+.1f}"
    share = t.oracle_share
    if not t.partners:
        oracle = "no partners"
    elif share is None:
        oracle = "–" if t.oracle is None else f"oracle {t.oracle - t.local:+.1f}: no gain to share"
    else:
        oracle = f"{100 * share:.0f} % of {t.oracle - t.local:+.1f} ({_yes_no(share >= MIN_ORACLE_SHARE)})"
    return [
        f"{t.suite} ({METRIC_NAMES.get(t.metric, t.metric)}; {' '.join(map(str, t.seeds))})",
        f"{t.candidate:.1f}",
        delta,
        best,
        bar,
        _yes_no(t.bar_met),
        f"{worst} ({_yes_no(None if t.worst_client is None else t.worst_client >= MIN_WORST_CLIENT)})",
        oracle,
        t.room(),
        "–" if t.aa_mean is None else f"{t.aa_mean:+.1f} / {t.aa_worst:+.1f}",
    ]


def rule_targets(outputs: Sequence[str], method: str, seeds: Optional[Sequence[int]] = None) -> str:
    """The Markdown table of the candidate's targets, one row per folder where it ran, and a line of totals."""
    header = [
        "suite (metric; seeds)",
        method,
        "Δ vs Local",
        "best other",
        f"bar (best − {MARGIN})",
        "≥ bar?",
        "worst client Δ (≥ −1?)",
        "share of the oracle's gain (≥ 75 %?)",
        "room",
        "A/A: Local reseeded − Local, mean / worst client",
    ]
    checked = [t for t in (suite_targets(o, method, seeds) for o in outputs) if t is not None]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_row(t)) + " |" for t in checked]
    met = sum(bool(t.bar_met) for t in checked)
    ran = {t.suite for t in checked}
    absent = [os.path.basename(o.rstrip("/")) for o in outputs if suite_name(o) not in ran]
    note = (
        f"Generated by `python -m benchmarks.rule_targets --method {method}"
        + (f" --seeds {' '.join(map(str, seeds))}" if seeds else "")
        + f"`: mean over clients × 100, then over the seeds listed. Bar met on {met} of {len(checked)} suites"
        + (f"; not run on {', '.join(absent)}" if absent else "")
        + ". Competitors are the methods that ran all those seeds; oracle-groups is the ceiling, not a competitor; A/A"
        + f" is {NOISE_CONTROL} (Local with another training seed, same data) against Local, – where it did not run."
    )
    return "\n".join(lines + ["", note])


def markers(method: str) -> Tuple[str, str]:
    """The begin and end markers of ``method``'s table in a page."""
    return f"<!-- rule-targets:{method}:begin -->", f"<!-- rule-targets:{method}:end -->"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints the table (and writes it into ``--write`` files); 2 for a folder without ``benchmark.json``."""
    p = table_parser(__doc__, "rule-targets")
    p.add_argument("--method", required=True, help="the candidate rule's benchmark method, e.g. fedbip-own-check")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="judge at these seeds only (default: all)")
    args = p.parse_args(argv)
    if not outputs_exist(args.outputs):
        return 2
    table = rule_targets(args.outputs, args.method, args.seeds)
    return publish(table, args.write, *markers(args.method))


if __name__ == "__main__":
    sys.exit(main())
