"""Quality benchmark: every method on the same suite, data, seeds, sizes and budget.

python -m benchmarks.quality --suite text-tasks --methods all --seeds 0 1 2 --output DIR
python -m benchmarks.quality --suite text-tasks --methods local fedbip --num-rounds 3 --max-examples 160 --output DIR
python -m benchmarks.quality --output DIR --summary-only     # rebuild DIR/summary.md and the plots

Each (method, seed) runs its recipe in NVFlare's simulator (SimEnv, workspace DIR/_workspace/<method>/seed<k>)
and writes DIR/<method>/seed<k>/results.json (the jobs' schema plus "wall_time_s", "suite" and "seed"),
the server's rounds.jsonl beside it and the simulator's output in run.log. A failing run is logged
(DIR/<method>/seed<k>/error.txt) and the others go on; the command then exits 1. At the end DIR/summary.md
(method x client accuracy, mean over seeds, gaps to Local, wall times) and PNG plots are written.

Adding a method: one ``METHODS`` entry, ``"name": Method(recipe_factory, options)``, where the factory takes the
shared keyword arguments of ``RunSpec.recipe_kwargs`` (name, model, modality, num_rounds, min_clients, data,
local_epochs, max_length, num_threads, seed) plus the method's ``options(spec)``, and its job writes the server's
``fedbip/results.json`` (``fedbip_nvflare.results.load_results`` reads it). Adding a suite: one ``SUITES`` entry,
``Suite(data_suite, num_clients, n_train, n_test, data={extra data-config keys})`` (plus ``modality`` and its default
``model`` for a suite that is not text).
"""

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from benchmarks.reporting import PROVENANCE_KEYS, command_line, provenance
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.data import VISION_SUITES, site_names, suite_groups, vision_suite_groups
from fedbip_nvflare.data.flan import FLAN_8, FLAN_PAIRS, FLAN_SUITES, flan_suite_groups
from fedbip_nvflare.data.instruct_suite import SUITE as INSTRUCT_SUITE
from fedbip_nvflare.data.instruct_suite import instruct_suite_groups
from fedbip_nvflare.results import find_server_results, load_results, run_failure, write_results

logger = logging.getLogger("benchmarks.quality")

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BENCHMARK_FILE = "benchmark.json"
WORKSPACE_DIR = "_workspace"
RUN_LOG = "run.log"
ERROR_FILE = "error.txt"


# -- suites ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Suite:
    """Declaration of a benchmark suite: which data suite the sites load, with which defaults.

    Attributes:
        data_suite: The ``"suite"`` the sites' data config names (a suite of ``fedbip_nvflare.data``).
        num_clients: Default number of clients.
        n_train: Default training examples per client.
        n_test: Default test examples per client.
        data: Extra data-config keys (e.g. ``{"alpha": 0.1}``); ``group_size`` is also passed to
            ``suite_groups`` for the oracle's groups.
        pass_num_clients: The data config carries ``"num_clients"`` (suites that partition one pool over all
            clients need it).
        num_labels: Size of the label space every client shares (None: clients' label spaces differ, and
            ``--federate-head`` combines heads per label space).
        conflicting: The last this many clients label every text with the next class (the data config's
            ``conflict_sites``).
        modality: What the sites train (a key of ``fedbip_nvflare.modalities.MODALITIES``).
        model: The suite's default model (None: ``DEFAULT_MODEL``, the text model).
        has_head: The suite's sites train a classification head (methods that train only a head need one).
        settings: Further recipe keyword arguments of the suite's runs (e.g. a causal LM's ``max_new_tokens``).
        needs_data_dir: The suite reads a data directory the user names (``--data-dir``; the data config's
            ``data_dir``).
        max_length: Default token truncation length of the suite's runs (``--max-length`` overrides it).
    """

    data_suite: str
    num_clients: int
    n_train: int
    n_test: int
    data: Mapping[str, Any] = field(default_factory=dict)
    pass_num_clients: bool = False
    num_labels: Optional[int] = None
    conflicting: int = 0
    modality: str = "text"
    model: Optional[str] = None
    has_head: bool = True
    settings: Dict[str, Any] = field(default_factory=dict)
    needs_data_dir: bool = False
    max_length: int = 128

    def conflict_sites(self, num_clients: int) -> List[str]:
        """The conflicting clients among ``num_clients``: the last ``conflicting`` site names."""
        return site_names(num_clients)[num_clients - min(self.conflicting, num_clients) :]

    def data_config(
        self, num_clients: int, n_train: int, n_test: int, seed: int, data_dir: Optional[str] = None
    ) -> Dict[str, Any]:
        """The data config every site gets (identical for every method of a benchmark).

        Returns:
            ``{"suite", "n_train", "n_test", "seed", **data}`` plus ``"num_clients"`` if ``pass_num_clients``,
            ``"conflict_sites"`` (comma-separated) if the suite has conflicting clients and ``"data_dir"`` if the
            suite reads one.

        Raises:
            ValueError: The suite needs a data directory and ``data_dir`` is None.
        """
        config = {"suite": self.data_suite, "n_train": n_train, "n_test": n_test, "seed": seed, **self.data}
        if self.needs_data_dir:
            if not data_dir:
                raise ValueError(f"suite {self.data_suite!r} reads a data directory: pass --data-dir")
            config["data_dir"] = data_dir
        if self.pass_num_clients:
            config["num_clients"] = num_clients
        if self.conflicting:
            config["conflict_sites"] = ",".join(self.conflict_sites(num_clients))
        return config

    def groups(self, num_clients: int, data_dir: Optional[str] = None) -> Dict[str, Any]:
        """The ground-truth client groups ``{site: group}`` (for the oracle), from ``suite_groups``.

        Raises:
            ValueError: Bad suite options (raised by ``suite_groups``).
        """
        if self.data_suite in FLAN_SUITES:
            return dict(flan_suite_groups(self.data_suite, num_clients, data_dir))
        if self.data_suite in VISION_SUITES:
            return dict(vision_suite_groups(self.data_suite, num_clients))
        if self.data_suite == INSTRUCT_SUITE:
            return dict(instruct_suite_groups(num_clients))
        extra = {k: self.data[k] for k in ("group_size",) if k in self.data}
        return dict(
            suite_groups(self.data_suite, num_clients, conflict_sites=self.conflict_sites(num_clients), **extra)
        )


SUITES: Dict[str, Suite] = {
    "text-tasks": Suite("text-tasks", num_clients=8, n_train=300, n_test=200),
    # text-groups' tasks give every site of a group (up to 3) a disjoint class-balanced test set of 500.
    "text-groups": Suite("text-groups", num_clients=8, n_train=100, n_test=500, data={"group_size": 2}),
    "label-skew-0.1": Suite("label-skew", 10, 300, 200, data={"alpha": 0.1}, pass_num_clients=True, num_labels=20),
    "label-skew-1.0": Suite("label-skew", 10, 300, 200, data={"alpha": 1.0}, pass_num_clients=True, num_labels=20),
    # The last two clients label every text with the next class. Run with --federate-head: with private heads
    # the shift is absorbed by each head. FedBip's negative-cosine policy decides what the others take from them.
    "label-skew-conflict": Suite(
        "label-skew", 10, 300, 200, data={"alpha": 1.0}, pass_num_clients=True, num_labels=20, conflicting=2
    ),
    # Clothing (3 Fashion-MNIST clients) and handwritten digits (2 MNIST, 1 8x8 digits), MobileNetV2 at 32 px.
    "vision-domains": Suite(
        "vision-domains", 6, 200, 200, data={"image_size": 32}, modality="vision", model="torchvision/mobilenet_v2"
    ),
    # Text-tasks' corpora as Flan-style instructions with short answers (SmolLM2-135M-Instruct, no head); scored by
    # exact match of greedy answers. Small for a CPU: 4 tasks (sentiment, tweet author, BBC section, Reuters topic).
    INSTRUCT_SUITE: Suite(
        INSTRUCT_SUITE,
        4,
        32,
        32,
        data={"max_input_words": 48},
        modality="causal-lm",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        has_head=False,
        settings={"batch_size": 8, "max_new_tokens": 8},
    ),
    # The FedBip paper's kind of data: federated Flan (FedDPA's 8 tasks, one per client; FedOA's 4 categories x 2
    # related tasks), read from --data-dir, prompts in the alpaca_short template, scored by ROUGE and exact match.
    # Sized for 2 CPU cores (see benchmarks/results/README.md): few training examples per client (the paper's
    # limited-data regime), long instructions shortened around their middle, answers capped near the longest label.
    FLAN_8: Suite(
        FLAN_8,
        8,
        32,
        48,
        data={"max_instruction_words": 96},
        modality="causal-lm",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        has_head=False,
        settings={"batch_size": 8, "max_new_tokens": 32},
        needs_data_dir=True,
        max_length=256,
    ),
    FLAN_PAIRS: Suite(
        FLAN_PAIRS,
        8,
        32,
        48,
        data={"max_instruction_words": 96},
        modality="causal-lm",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        has_head=False,
        settings={"batch_size": 8, "max_new_tokens": 32},
        needs_data_dir=True,
        max_length=256,
    ),
}


# -- one run's specification -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """Everything a run depends on besides the method: identical for every method of a benchmark.

    Attributes:
        suite: Benchmark suite name (a key of ``SUITES``).
        num_clients: Clients (all take part in every round: ``min_clients = num_clients``).
        num_rounds: Federated rounds.
        n_train: Training examples per client.
        n_test: Test examples per client.
        local_epochs: Local epochs per round.
        max_length: Token truncation length.
        threads: Clients the simulator runs in parallel (None: all, one process per site for the run).
        torch_threads: torch CPU threads per client.
        seed: Seed of the data sampling, θ̄⁰, the heads and shuffling.
        model: HF model id or local folder.
        learning_rate: LoRA learning rate of every site.
        round_eval_examples: Test examples for the per-round evaluations (None: all); final accuracies always
            use the whole test split.
        federate_head: Every method federates the classification head too: with the suite's shared
            ``num_labels``, or per label space where clients' label spaces differ.
        modality: What the sites train (the suite's).
        data_dir: The suite's data directory (suites that read one, e.g. ``flan-8``), absolute.
        settings: Further recipe keyword arguments (None: the suite's ``settings``).
        image_size: Side of an image suite's images in pixels (None: the suite's ``data["image_size"]``).
    """

    suite: str
    num_clients: int
    num_rounds: int
    n_train: int
    n_test: int
    local_epochs: int = 1
    max_length: int = 128
    threads: Optional[int] = None
    torch_threads: int = 1
    seed: int = 0
    model: str = DEFAULT_MODEL
    learning_rate: float = 1e-3
    round_eval_examples: Optional[int] = None
    federate_head: bool = False
    modality: str = "text"
    data_dir: Optional[str] = None
    settings: Optional[Dict[str, Any]] = None
    image_size: Optional[int] = None

    def data_config(self) -> Dict[str, Any]:
        """The sites' data config (see ``Suite.data_config``), with ``image_size`` where set."""
        config = SUITES[self.suite].data_config(self.num_clients, self.n_train, self.n_test, self.seed, self.data_dir)
        return config if self.image_size is None else {**config, "image_size": self.image_size}

    def groups(self) -> Dict[str, Any]:
        """The suite's ground-truth groups for this many clients (see ``Suite.groups``)."""
        return SUITES[self.suite].groups(self.num_clients, self.data_dir)

    def recipe_kwargs(self, name: str) -> Dict[str, Any]:
        """Keyword arguments every method's recipe takes: the shared data, sizes and budget."""
        head = {"federate_head": True, "num_labels": SUITES[self.suite].num_labels} if self.federate_head else {}
        return dict(
            **head,
            name=name,
            model=self.model,
            modality=self.modality,
            num_rounds=self.num_rounds,
            min_clients=self.num_clients,
            data=self.data_config(),
            local_epochs=self.local_epochs,
            max_length=self.max_length,
            num_threads=self.torch_threads,
            seed=self.seed,
            learning_rate=self.learning_rate,
            round_eval_examples=self.round_eval_examples,
            **(SUITES[self.suite].settings if self.settings is None else self.settings),
        )


# -- methods -----------------------------------------------------------------------------------------------
def _fedbip_recipe(**kwargs: Any):
    from fedbip_nvflare.recipes import FedBipRecipe

    return FedBipRecipe(**kwargs)


def _options(**fixed: Any) -> Callable[[RunSpec], Dict[str, Any]]:
    return lambda spec: dict(fixed)


@dataclass(frozen=True)
class Method:
    """How a method runs: a recipe factory and the method's own recipe keyword arguments.

    Attributes:
        recipe: Called with ``RunSpec.recipe_kwargs(...)`` plus ``options(spec)``; returns a Recipe that
            writes the server's ``fedbip/results.json``.
        options: The method's recipe keyword arguments for a run (may depend on the spec, e.g. groups).
        one_model: The method trains one model for every client (it cannot federate heads per label space).
        head: True: only for suites whose sites have a classification head; False: only for suites without;
            None: any suite.
    """

    recipe: Callable[..., Any]
    options: Callable[[RunSpec], Dict[str, Any]] = _options()
    one_model: bool = False
    head: Optional[bool] = None


RESEED_OFFSET = 1000  # local-reseeded's training seed is the run's seed + this

# The order. Adding a method is one entry. Aggregation methods are rules found by name in
# ``fedbip_nvflare.server.rules.RULES`` (the recipe's ``aggregation``, ``aggregation_options`` and rule keywords, or
# ``rule=``): a new rule is one class and one registry line there, then one entry here.
METHODS: Dict[str, Method] = {
    "probe": Method(_fedbip_recipe, _options(aggregation="local", train_lora=False), head=True),
    # Without a head, nothing trains: the pre-trained model as it is (the probe's counterpart for causal LMs).
    "zero-shot": Method(_fedbip_recipe, _options(aggregation="local", train_lora=False), head=False),
    "local": Method(_fedbip_recipe, _options(aggregation="local")),
    # A noise control, not a method: Local again with another training seed (θ̄⁰, heads, shuffling) on the same data.
    # Its gap to Local is what any change of the training trajectory moves a score by (rule_targets' A/A column).
    "local-reseeded": Method(_fedbip_recipe, lambda spec: {"aggregation": "local", "seed": spec.seed + RESEED_OFFSET}),
    "fedavg": Method(_fedbip_recipe, _options(aggregation="fedavg"), one_model=True),
    # FedAvg with a server learning rate sqrt(N): the mean of N near-orthogonal updates is ~1/sqrt(N) as long.
    "fedavg-slr": Method(
        _fedbip_recipe,
        lambda spec: {"aggregation": "fedavg", "server_learning_rate": round(spec.num_clients**0.5, 3)},
        one_model=True,
    ),
    "fedamp": Method(_fedbip_recipe, _options(aggregation="fedamp")),
    # LoRA A averaged, B (and heads) kept local (Guo et al., ICLR 2025).
    "fedsa-lora": Method(_fedbip_recipe, _options(aggregation="fedsa-lora")),
    # FedAvg for all rounds but the last, whose local epoch fine-tunes the averaged model (same budget).
    "fedavg-ft": Method(_fedbip_recipe, _options(aggregation="fedavg-ft")),
    "fedbip": Method(_fedbip_recipe),
    "fedbip-l": Method(_fedbip_recipe, _options(layerwise=True)),
    "fedbip-cumulative": Method(_fedbip_recipe, _options(similarity_on="cumulative")),
    # Beyond the paper: cosines after removing the round's mean task vector.
    "fedbip-centered": Method(_fedbip_recipe, _options(center_similarity=True)),
    # Beyond the paper: cosines of the cumulative vectors θ_i − θ̄⁰ after removing their mean (the direction the whole
    # federation moved), so only what a client shares with some clients and not with all counts.
    "fedbip-cumulative-centered": Method(_fedbip_recipe, _options(similarity_on="cumulative", center_similarity=True)),
    # Beyond the paper, against outsized updates: every task vector clipped to 2x the round's median norm.
    "fedbip-norm-bound": Method(_fedbip_recipe, _options(norm_bound=2.0)),
    # Beyond the paper: every site holds out 1/8 of its training examples and starts each round (and its final
    # model) from the received model, its own last model or their midpoint, whichever scores best on them.
    "fedbip-checked": Method(_fedbip_recipe, _options(holdout_fraction=0.125)),
    "fedbip-cumulative-checked": Method(_fedbip_recipe, _options(similarity_on="cumulative", holdout_fraction=0.125)),
    # Beyond the paper: nothing held out; each site starts from its own last model where the received model has the
    # higher training loss than a control point with its own share of its update and nothing of the others'.
    "fedbip-partner-check": Method(_fedbip_recipe, _options(partner_check="control")),
    "fedbip-cumulative-partner-check": Method(
        _fedbip_recipe, _options(similarity_on="cumulative", partner_check="control")
    ),
    # The same, compared with the site's own last model: the received one is kept only where it fits the site's
    # training data at least as well as the model trained on it.
    "fedbip-own-check": Method(_fedbip_recipe, _options(partner_check="own")),
    "fedbip-cumulative-own-check": Method(_fedbip_recipe, _options(similarity_on="cumulative", partner_check="own")),
    # Beyond the paper, after FedSA-LoRA: LoRA A averaged over all clients, FedBip's weights (from B's cosines) on B.
    "fedbip-sa": Method(_fedbip_recipe, _options(share_lora_a=True)),
    "fedbip-cumulative-sa": Method(_fedbip_recipe, _options(similarity_on="cumulative", share_lora_a=True)),
    # The same, with B's cosines taken after removing the round's mean B update (the direction every client shares,
    # e.g. an answer format), so only B updates shared by some clients and not by all weigh.
    "fedbip-centered-sa": Method(_fedbip_recipe, _options(center_similarity=True, share_lora_a=True)),
    "oracle-groups": Method(
        _fedbip_recipe,
        lambda spec: {"aggregation": "oracle-groups", "aggregation_options": {"groups": spec.groups()}},
    ),
}


def method_kwargs(method: str, spec: RunSpec, name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The shared recipe keyword arguments and the method's own, for ``METHODS[method].recipe(**shared, **own)``.

    A key the method sets (e.g. ``local-reseeded``'s ``seed``) is the method's: it is left out of the shared ones.
    """
    options = METHODS[method].options(spec)
    shared = {k: v for k, v in spec.recipe_kwargs(name).items() if k not in options}
    return shared, options


def select_methods(requested: Sequence[str]) -> List[str]:
    """Resolves the ``--methods`` arguments.

    Args:
        requested: Method names, or ``["all"]``.

    Returns:
        The methods to run: all in ``METHODS`` order for ``all``, else as given, without repeats.

    Raises:
        ValueError: An unknown method.
    """
    if "all" in requested:
        return list(METHODS)
    methods = list(dict.fromkeys(requested))
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; valid methods: {', '.join(METHODS)} (or all)")
    return methods


# -- running -----------------------------------------------------------------------------------------------
def run_dir(output: str, method: str, seed: int) -> str:
    """``DIR/<method>/seed<k>``: where a run's results.json, rounds.jsonl and run.log go."""
    return os.path.join(output, method, f"seed{seed}")


def job_name(method: str) -> str:
    """The NVFlare job name of a method's run."""
    return "quality_" + method.replace("-", "_")


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
    """Sends this process's (and its children's) stdout and stderr to ``path`` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "a") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def result_problems(results: Mapping[str, Any], num_clients: int) -> List[str]:
    """What makes a run's results incomplete: the shared run check (every client must produce a result), missing
    clients, or a final accuracy that is not in [0, 1]."""
    clients = results.get("clients", {})
    failure = run_failure(results, num_clients)
    problems = [failure] if failure else []
    if len(clients) != num_clients:
        problems.append(f"{len(clients)} of {num_clients} clients reported results")
    for site, info in clients.items():
        acc = info.get("accuracy")
        if not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
            problems.append(f"{site}: final accuracy {acc!r}")
    return problems


def run_one(method: str, spec: RunSpec, output: str, provenance: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Runs one (method, seed) and writes its results; never raises for a failing run.

    Writes ``DIR/<method>/seed<k>/``: ``results.json`` (``load_results`` schema + ``wall_time_s``, ``suite``,
    ``seed``), ``rounds.jsonl`` (the server's), ``run.log`` (simulator output) and, if it failed, ``error.txt``.
    The run's simulator workspace ``DIR/_workspace/<method>/seed<k>`` is recreated from scratch.

    Returns:
        ``{"method", "seed", "status": "ok" | "failed", "wall_time_s", "error"}``.
    """
    out = run_dir(output, method, spec.seed)
    workspace = os.path.join(output, WORKSPACE_DIR, method, f"seed{spec.seed}")
    for stale in (workspace, out):
        shutil.rmtree(stale, ignore_errors=True)
    os.makedirs(out)
    record: Dict[str, Any] = {"method": method, "seed": spec.seed, "status": "ok", "error": None}
    start = time.perf_counter()
    try:
        from nvflare.recipe.sim_env import SimEnv

        with _output_to(os.path.join(out, RUN_LOG)):
            name = job_name(method)
            recipe_kwargs, options = method_kwargs(method, spec, name)
            recipe = METHODS[method].recipe(**recipe_kwargs, **options)
            recipe.execute(SimEnv(num_clients=spec.num_clients, num_threads=spec.threads, workspace_root=workspace))
        record["wall_time_s"] = round(time.perf_counter() - start, 1)
        job_dir = os.path.join(workspace, name)
        results = load_results(job_dir, method=method)
        results.update(wall_time_s=record["wall_time_s"], suite=spec.suite, seed=spec.seed, **dict(provenance or {}))
        results["configuration"] = {"recipe": _jsonable(recipe_kwargs), "method_options": _jsonable(options)}
        write_results(results, out)
        rounds = os.path.join(os.path.dirname(find_server_results(job_dir)), K.ROUNDS_FILE)
        if os.path.exists(rounds):
            shutil.copy(rounds, out)
        problems = result_problems(results, spec.num_clients)
        if problems:
            raise RuntimeError("incomplete results: " + "; ".join(problems))
    except Exception as e:  # one failing run must not stop the others
        record.setdefault("wall_time_s", round(time.perf_counter() - start, 1))
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        with open(os.path.join(out, ERROR_FILE), "w") as f:
            f.write(traceback.format_exc())
        logger.error("%s seed %d failed: %s (details: %s)", method, spec.seed, record["error"], out)
    return record


INVOCATION_KEYS = (*PROVENANCE_KEYS, "methods", "seeds")


def same_config(
    earlier: Optional[Mapping[str, Any]], now: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None
) -> bool:
    """Whether an earlier run's spec (or data config) is ``now``'s: equal, where a key the earlier file lacks counts
    as equal when ``now`` holds an empty value there (None, {}, []) or the option's default in ``defaults`` (an
    option added since, at the value runs had before it existed)."""
    if earlier is None:
        return False
    defaults = defaults or {}

    def added_as_before(k: str, v: Any) -> bool:
        return k not in earlier and (v in (None, {}, []) or (k in defaults and defaults[k] == v))

    return dict(earlier) == {k: v for k, v in now.items() if not added_as_before(k, v)}


SPEC_DEFAULTS = {f.name: f.default for f in fields(RunSpec) if f.default is not MISSING}


def resolved_spec(spec: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """``spec`` with ``settings: None`` (older files: "the suite's settings") replaced by its suite's settings as
    defined now, so that a spec written before the settings were recorded compares equal to one written after."""
    if spec is None:
        return None
    if spec.get("settings") is None and spec.get("suite") in SUITES:
        return {**spec, "settings": dict(SUITES[spec["suite"]].settings)}
    return dict(spec)


def merge_invocations(output: str, info: Dict[str, Any]) -> Dict[str, Any]:
    """``info`` joined with an earlier ``DIR/benchmark.json`` of the same configuration (a campaign split by seeds or
    methods over several invocations): its runs are kept (those rerun now are replaced when they finish), methods
    and seeds are united, and ``"invocations"`` lists every invocation's command, commit, machine, methods and seeds.

    Raises:
        ValueError: DIR holds a benchmark of another configuration (spec or data config).
    """
    path = os.path.join(output, BENCHMARK_FILE)
    current = {k: info[k] for k in INVOCATION_KEYS}
    if not os.path.exists(path):
        return {**info, "invocations": [current]}
    with open(path) as f:
        previous = json.load(f)
    for key in ("spec", "data"):
        earlier, now = previous.get(key), info[key]
        if key == "spec":
            earlier, now = resolved_spec(earlier), resolved_spec(now)
        if not same_config(earlier, now, SPEC_DEFAULTS if key == "spec" else None):
            raise ValueError(
                f"{output} holds a benchmark with another {key} ({previous.get(key)} vs {info[key]}); "
                "use another --output or the same flags"
            )
    earlier = previous.get("invocations") or [{k: previous.get(k) for k in (*INVOCATION_KEYS, "wall_time_s")}]
    return {
        **info,
        "methods": list(dict.fromkeys([*previous.get("methods", []), *info["methods"]])),
        "seeds": sorted({*previous.get("seeds", []), *info["seeds"]}),
        "runs": previous.get("runs", []),
        "invocations": [*earlier, current],
    }


def write_benchmark(output: str, info: Mapping[str, Any]) -> None:
    """Writes ``DIR/benchmark.json`` (command, configuration, runs), which ``--summary-only`` reads."""
    with open(os.path.join(output, BENCHMARK_FILE), "w") as f:
        json.dump(info, f, indent=2)


def run_benchmark(
    methods: Sequence[str], seeds: Sequence[int], base: RunSpec, output: str, info: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """Runs every (method, seed) with the same spec but for the seed; records progress in ``benchmark.json``.

    Args:
        methods: Methods to run (runnable, see ``select_methods``).
        seeds: Seeds; seed k runs with ``RunSpec(seed=k)``.
        base: The spec shared by all runs (its seed is replaced).
        output: Output folder DIR.
        info: ``benchmark.json``'s content so far; its ``"runs"`` list is filled in.

    Returns:
        The records of the runs made now (see ``run_one``), seed-major; ``info["runs"]`` also keeps the records
        of earlier invocations that were not rerun.
    """
    todo = {(m, s) for m in methods for s in seeds}
    info["runs"] = [r for r in info.get("runs", []) if (r["method"], r["seed"]) not in todo]
    new: List[Dict[str, Any]] = []
    for seed in seeds:
        spec = RunSpec(**{**asdict(base), "seed": seed})
        for method in methods:
            logger.info("running %s seed %d ...", method, seed)
            origin = {k: info.get(k) for k in PROVENANCE_KEYS}
            record = run_one(method, spec, output, origin)
            logger.info("%s seed %d: %s in %.1f s", method, seed, record["status"], record["wall_time_s"])
            info["runs"].append(record)
            new.append(record)
            write_benchmark(output, info)
    return new


def _jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold (rule objects, tuples) as its ``repr``/list: for the results record."""
    return json.loads(json.dumps(value, default=repr))


# -- command line ------------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="text-tasks", choices=sorted(SUITES))
    p.add_argument(
        "--methods", nargs="+", default=["all"], metavar="METHOD", help=f"{' '.join(METHODS)}, or all (default)"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--output", required=True, help="output folder DIR")
    p.add_argument("--num-clients", type=positive_int, default=None, help="default: the suite's")
    p.add_argument("--num-rounds", type=positive_int, default=3)
    p.add_argument("--max-examples", type=positive_int, default=None, help="training examples per client (suite's)")
    p.add_argument("--test-examples", type=positive_int, default=None, help="test examples per client (suite's)")
    p.add_argument("--local-epochs", type=positive_int, default=1)
    p.add_argument("--max-length", type=positive_int, default=None, help="token truncation length (suite's)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="LoRA learning rate")
    p.add_argument(
        "--round-eval-examples",
        type=positive_int,
        default=None,
        help="test examples for the per-round curves (default: all); final accuracies use all",
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="clients the simulator runs in parallel (default: all)"
    )
    p.add_argument("--torch-threads", type=positive_int, default=1, help="torch CPU threads per client")
    p.add_argument("--model", default=None, help="model id or local folder (default: the suite's, else MiniLM)")
    p.add_argument(
        "--federate-head",
        action="store_true",
        help="every method also federates the classification head (per label space where clients' differ; "
        "then the FedAvg methods, which average one head for all, are left out)",
    )
    p.add_argument(
        "--data-dir", default=None, help="the suite's data directory (flan-8, flan-pairs: e.g. ../shared/data/flan-ds1)"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="causal LMs' answer length (suite's)")
    p.add_argument("--image-size", type=positive_int, default=None, help="image suites' image side in px (suite's)")
    p.add_argument("--summary-only", action="store_true", help="only rebuild summary.md and plots from DIR")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (or rebuilds its summary) and prints the summary table.

    Returns:
        0 if every run succeeded, 1 if any failed, 2 for a bad command line.
    """
    from benchmarks.summary import write_summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    output = os.path.abspath(args.output)
    if args.summary_only:
        print(write_summary(output))
        return 0
    try:
        methods = select_methods(args.methods)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    suite = SUITES[args.suite]
    unfit = [m for m in methods if METHODS[m].head not in (None, suite.has_head)]
    for m in unfit:
        if "all" not in args.methods:
            why = (
                "it trains only a classification head, and {}'s sites have none (zero-shot is its counterpart)"
                if METHODS[m].head
                else "it is for models without a head, and {}'s sites have one (probe is its counterpart)"
            )
            print(f"skipping {m}: " + why.format(args.suite), file=sys.stderr)
    methods = [m for m in methods if m not in unfit]
    if not methods:
        print(f"error: no method left to run on {args.suite}", file=sys.stderr)
        return 2
    if args.image_size is not None and suite.modality != "vision":
        print(f"error: --image-size is for image suites; {args.suite} is a {suite.modality} suite", file=sys.stderr)
        return 2
    if args.federate_head and suite.num_labels is None:
        # Heads per label space: NVFlare's FedAvg averages one head for all and cannot run here.
        single_head = [m for m in methods if METHODS[m].one_model]
        if single_head and "all" not in args.methods:
            print(
                f"error: {', '.join(single_head)} average one head for every client, but {args.suite}'s clients have "
                "different label spaces; drop them or leave out --federate-head",
                file=sys.stderr,
            )
            return 2
        methods = [m for m in methods if m not in single_head]
    base = RunSpec(
        suite=args.suite,
        num_clients=args.num_clients or suite.num_clients,
        num_rounds=args.num_rounds,
        n_train=args.max_examples or suite.n_train,
        n_test=args.test_examples or suite.n_test,
        local_epochs=args.local_epochs,
        max_length=args.max_length or suite.max_length,
        threads=args.threads,
        torch_threads=args.torch_threads,
        model=args.model or suite.model or DEFAULT_MODEL,
        modality=suite.modality,
        learning_rate=args.learning_rate,
        round_eval_examples=args.round_eval_examples,
        federate_head=args.federate_head,
        data_dir=os.path.abspath(args.data_dir) if args.data_dir else None,
        settings=dict(suite.settings, **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})),
        image_size=args.image_size,
    )
    try:
        base.data_config(), base.groups()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(output, exist_ok=True)
    info: Dict[str, Any] = {
        **provenance(command_line("benchmarks.quality", argv)),
        "spec": {k: v for k, v in asdict(base).items() if k != "seed"},
        "data": {k: v for k, v in base.data_config().items() if k != "seed"},
        "methods": methods,
        "seeds": list(args.seeds),
        "groups": base.groups(),
    }
    try:
        info = merge_invocations(output, info)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    runs = run_benchmark(methods, args.seeds, base, output, info)
    info["invocations"][-1]["wall_time_s"] = round(time.perf_counter() - start, 1)
    info["wall_time_s"] = round(sum(i.get("wall_time_s") or 0.0 for i in info["invocations"]), 1)
    write_benchmark(output, info)
    print(write_summary(output))
    failed = [r for r in runs if r["status"] != "ok"]
    for r in failed:
        print(f"FAILED: {r['method']} seed {r['seed']}: {r['error']} ({run_dir(output, r['method'], r['seed'])})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
