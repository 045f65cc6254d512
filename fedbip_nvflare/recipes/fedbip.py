"""FedBipRecipe: a validated Recipe-API front over FedBip's controller and client executor."""

import copy
import dataclasses
import importlib.util
import inspect
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from nvflare.job_config.api import FedJob
from nvflare.job_config.script_runner import ScriptRunner
from nvflare.recipe.spec import ExecEnv, Recipe

from fedbip_nvflare.client.executor import FedBipExecutor
from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.client.site_config import SITE_CONFIG_KEYS
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.data import check_data_config, site_names
from fedbip_nvflare.modalities import DEFAULT_MODALITY
from fedbip_nvflare.server.controller import FedBipController
from fedbip_nvflare.server.rule import AggregationRule
from fedbip_nvflare.server.rules import make_rule
from fedbip_nvflare.server.settings import ServerSettings
from fedbip_nvflare.tracking import validate_tracking

PACKAGE = "fedbip_nvflare"
CLIENT_MODES = ("executor", "client_api")
# The Client API script the recipe ships: the package's own module file, so it exists in every install
CLIENT_SCRIPT = importlib.util.find_spec("fedbip_nvflare.client.fedbip_client").origin
# The recipe's keywords that are options of a rule (FedBipRule's, FedAvgRule's server_learning_rate): set to
# anything but their default, they go to the rule ``aggregation`` names, which refuses options it does not take.
RULE_KEYWORDS = (
    "layerwise",
    "negative",
    "similarity_on",
    "center_similarity",
    "norm_bound",
    "streaming",
    "share_lora_a",
    "server_learning_rate",
)


def client_script_args(settings: Dict[str, Any]) -> str:
    """The Client API script's command line for the executor's settings.

    Every setting becomes ``--name value`` (lists comma-joined), each data entry ``--data key=value``;
    NVFlare splits script arguments on white space, so no value may contain any.
    """
    args = []
    for key, value in settings.items():
        items = value.items() if key == "data" else [(None, value)]
        for sub, v in items:
            if v is None:
                continue
            text = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            text = f"{sub}={text}" if sub is not None else text
            if not text or any(c.isspace() for c in text):
                raise ValueError(f"client_mode='client_api' cannot pass {key} {text!r}: values must not contain spaces")
            args += ["--" + key.replace("_", "-"), text]
    return " ".join(args)


class CustomScriptRunner(ScriptRunner):
    """NVFlare's ``ScriptRunner`` for a script that travels at the top of the app's ``custom/`` folder.

    Given an absolute path, ``ScriptRunner`` writes it as is into the in-process executor's configuration and copies
    the script to a ``custom/`` sub-folder derived from ``sys.path``, so the job runs only where the author's files
    are. This one copies ``script`` to ``custom/<name>`` and names it ``<name>`` in the configuration, which NVFlare
    looks up in the app's custom folder (in process) or runs as ``custom/<name>`` from the app folder (external
    process), wherever the job runs.

    Args:
        script: The script's path on the machine that builds the job.
        **kwargs: ``ScriptRunner``'s other arguments.
    """

    def __init__(self, script: str, **kwargs):
        super().__init__(script=os.path.basename(script), **kwargs)
        self.source = os.path.abspath(script)

    @classmethod
    def like(cls, runner: ScriptRunner) -> "CustomScriptRunner":
        """A runner with the settings of ``runner`` (a ``ScriptRunner`` that names its script by path) that ships
        the script as this class does."""
        names = [n for n in inspect.signature(ScriptRunner.__init__).parameters if n != "self"]
        return cls(**{n: getattr(runner, "_" + n) for n in names})  # ScriptRunner keeps each argument as _<name>

    def add_to_fed_job(self, job, ctx, **kwargs):
        job.add_file_source(self.source, None, "custom", ctx)
        return super().add_to_fed_job(_ResourcesAdded(job), ctx, **kwargs)


class ShipsClientScript:
    """Mixin for NVFlare's ``FedAvgRecipe`` (and its framework variants) whose client script travels with the job.

    Those recipes build each site's ``ScriptRunner`` in ``_create_client_runner`` from ``train_script``; given an
    absolute path, the exported job names that path of the machine that built it. With this mixin first among its
    bases, the recipe's runners are :class:`CustomScriptRunner` s, which ship the script at the top of the app's
    ``custom/`` folder and name it relative to it: ``class Recipe(ShipsClientScript, FedAvgRecipe)``.
    """

    def _create_client_runner(self, site_config: Dict) -> ScriptRunner:
        return CustomScriptRunner.like(super()._create_client_runner(site_config))


class _ResourcesAdded:
    """A job whose ``add_resources`` does nothing: ``ScriptRunner`` adds its script by name, copied already."""

    def __init__(self, job: FedJob):
        self._job = job

    def __getattr__(self, name: str):
        return getattr(self._job, name)

    def add_resources(self, resources: List[str], ctx) -> None:
        pass


def allow_fedbip_components(workspace: str, file: str = "resources.json") -> str:
    """Adds this package to the component allow-list of an NVFlare site or simulator workspace.

    NVFlare 2.9 builds only allow-listed component classes for jobs without custom code. This writes
    ``<workspace>/local/resources.json`` with NVFlare's default list plus ``fedbip_nvflare.`` (keeping
    an existing file, or starting from a provisioned kit's ``resources.json.default``, and adding the entry),
    which is what a site admin does for an installed package.

    Args:
        workspace: The site (or simulator) workspace folder.
        file: The file in ``local/`` to write; ``"resources.json.default"`` adds the entry to the provisioned
            defaults themselves (what a provisioning builder does, see ``recipes.poc.AllowListBuilder``).

    Returns:
        The path of the resources file.
    """
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST
    from nvflare.app_common.widgets.component_path_authorizer import CLASS_ALLOW_LIST

    local = os.path.join(workspace, "local")
    os.makedirs(local, exist_ok=True)
    path = os.path.join(local, file)
    resources: Dict[str, Any] = {"format_version": 2}
    # keep the file, else start from the provisioned kit's defaults
    source = path if os.path.exists(path) else os.path.join(local, "resources.json.default")
    if os.path.exists(source):
        with open(source) as f:
            resources = json.load(f)
    allow = list(resources.get(CLASS_ALLOW_LIST, DEFAULT_CLASS_ALLOW_LIST))
    if "*" not in allow and PACKAGE + "." not in allow:
        allow.append(PACKAGE + ".")
    resources[CLASS_ALLOW_LIST] = allow
    with open(path, "w") as f:
        json.dump(resources, f, indent=2)
    return path


class FedBipRecipe(Recipe):
    """FedBip job: LoRA fine-tuning of a pre-trained HF model with per-client personalized aggregation.

    Mirrors NVFlare's ``FedAvgRecipe``: ``recipe.execute(SimEnv(...))`` (or ``PocEnv`` / ``ProdEnv``) runs it,
    ``python job.py --export --export-dir DIR`` exports the folder ``nvflare simulator`` takes.

    The keywords are a front over three validated objects that travel whole: ``recipe.rule`` (the aggregation
    rule, from ``aggregation``, ``aggregation_options`` and the rule keywords below, or ``rule=``),
    ``recipe.server`` (:class:`~fedbip_nvflare.server.settings.ServerSettings`, the controller's arguments) and
    ``recipe.client`` (:class:`~fedbip_nvflare.client.settings.TrainSettings`, the sites' fine-tuning settings).

    Args:
        name: Job name.
        model: HF model id or local folder, identical on the server and every site.
        modality: What the sites fine-tune: "text" (classifier with a private head; default), "vision" (image
            classifier with a private head), "causal-lm" (generative LM, every LoRA tensor travels); a key of
            ``fedbip_nvflare.modalities.MODALITIES``. The data configuration is the modality's.
        num_rounds: FedBip rounds.
        min_clients: Clients needed to start the job and least valid updates to aggregate a round.
        data: Site data configuration shared by all sites (per-site overrides: ``per_site_config``).
            ``{"suite": "text-tasks", "n_train": 300, "n_test": 200, "seed": 0}`` or
            ``{"train_path": ..., "test_path": ...}`` (CSV/JSONL with ``text``, ``label``).
        layerwise: FedBip-L (per-layer-group weights).
        negative: Negative-cosine policy: "clip" (default), "keep" (the paper's formula verbatim; a negated update
            can amplify its target's weights) or "keep-bounded" (keep, but a row whose negative cosines cancel more
            than half its positive ones is weighted as under clip).
        similarity_on: "round" or "cumulative".
        center_similarity: Beyond the paper: cosines of the task vectors minus the round's mean vector.
        norm_bound: Beyond the paper: clip each task vector to this multiple of the round's median norm.
        streaming: The server computes each client's personalized update only when it builds that client's
            model (memory of one update instead of N; N passes over the updates instead of one).
        share_lora_a: Beyond the paper, after FedSA-LoRA: LoRA A matrices averaged over all clients, FedBip's
            similarities and weights over the rest (B).
        resume_from: A ``state`` folder of an earlier run of this job (``<server run dir>/fedbip/state``): the
            server continues after its last completed round with every client's θ̄_i as saved (checksums
            verified; a corrupt or partial state stops the job before any task). FedBip-family aggregations only.
            The sites restore their private heads and round records from the snapshots they took in the earlier run
            (see ``site_state_root``).
        site_state_root: Folder where each site snapshots its private state (head, round record, own model) after
            every round, outside the job, for a resumed run to restore (None: ``<site workspace>/fedbip_state``, for
            the executor and the Client API script alike). NVFlare's simulator deletes its
            workspace when a job starts: a simulated run that is to be resumed needs a folder outside it.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (None: the modality's default, e.g. query/value for text, q_proj/v_proj
            for causal LMs).
        local_epochs: Local epochs per round.
        batch_size: Training batch size.
        learning_rate: LoRA learning rate.
        head_learning_rate: Learning rate of the client-private head.
        max_length: Token truncation length.
        gradient_accumulation_steps: Sites step the optimizer every this many batches.
        gradient_checkpointing: Sites recompute activations in the backward pass (less memory, more compute).
        max_new_tokens: Generation length of a causal LM's evaluation.
        holdout_fraction: Beyond the paper: each site holds out this fraction of its training examples and starts
            every round (and its final model) from whichever of the received model, its own last model and their
            midpoint has the lowest loss on them (``fedbip_nvflare.client.self_check``); 0: off.
        partner_check: Beyond the paper: each site starts every round after the first (and its final model) from its
            own last model instead of the received one where the received one has the higher loss on the site's own
            training data than its own last model (``"own"``) or than a control point without the others' updates
            (``"control"``) (``fedbip_nvflare.client.self_check.check_partners``); None: off. Not with
            ``holdout_fraction``.
        num_threads: torch CPU threads per site (None: torch default).
        seed: Seed of θ̄⁰, the heads and shuffling.
        train_timeout: Seconds per train task (0: no limit).
        validate_timeout: Seconds for the final validate task (0: no limit).
        client_mode: "executor" (in-process ``FedBipExecutor``, installed package) or "client_api"
            (the Client API script ``fedbip_nvflare/client/fedbip_client.py``, shipped with the job as the custom
            code ``custom/fedbip_client.py``).
        launch_external_process: With ``client_mode="client_api"``, run the script in its own process.
        per_site_config: ``{site: {"data": {...}, "num_threads": ..., "batch_size": ..., "local_epochs": ...}}``.
        log_updates: Server saves what each client was sent and returned every round.
        aggregation: Server rule, a name in ``fedbip_nvflare.server.rules.RULES``: "fedbip" (default); a baseline
            through the same workflow ("local", "fedamp", "fedsa-lora", "fedavg-ft", "oracle-groups"); or
            "fedavg": NVFlare's own ``FedAvg`` workflow averaging the LoRA tensors (heads stay local), then a final
            validate task. The rule keywords (layerwise, negative, similarity_on, center_similarity, norm_bound,
            streaming, share_lora_a, server_learning_rate) are its options when set to anything but their default; a
            rule refuses options it does not take.
        aggregation_options: Options of a baseline rule (FedAMP ``sigma``/``self_weight``; oracle ``groups``).
        rule: An ``AggregationRule`` object instead of ``aggregation``, ``aggregation_options`` and the rule
            keywords (e.g. ``FedBipRule(layerwise=True)``, or a rule of your own registered in ``RULES``).
        train_lora: False trains only each site's head on the frozen backbone: with ``aggregation="local"``
            this is the "probe" baseline (how much the federated LoRA part adds at all).
        federate_head: Federate the classification head too, under the same weights, combined only among
            clients of the same label space (e.g. the pairs of ``text-groups``).
        num_labels: With ``federate_head``: the number of labels every site shares (the head is then in θ̄⁰);
            None: heads join per label space after each site's first round. Required for ``"fedavg"``.
        round_eval_examples: Sites evaluate each round's received model on this many test examples (a fixed
            seeded subset) to save time; the final personalized models use the whole test split. None: all.
        precision: Sites' forward passes: "fp32", or "bf16" / "fp16" under ``torch.autocast`` (GPU sites; CPUs with
            bf16); what travels stays fp32.
        server_learning_rate: With ``aggregation="fedavg"``: the global adapter moves by this multiple of the
            averaged update (FedAvg with a server learning rate, ``θ ← θ + η·(mean θ_i − θ)``); 1.0 is plain
            FedAvg. Averaging near-orthogonal updates shrinks the step, which η > 1 compensates.
        tracking: NVFlare experiment tracking: "tensorboard", "mlflow" or "wandb" (the package must be
            installed), or None. Sites send their per-round metrics, the server (FedBip rules) the similarity and
            weight matrices, to the server's receiver (TensorBoard: ``<server run dir>/tb_events``).
    """

    def __init__(
        self,
        *,
        name: str = "fedbip",
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        num_rounds: int = 3,
        min_clients: int = 1,
        data: Optional[Dict[str, Any]] = None,
        layerwise: bool = False,
        negative: str = "clip",
        similarity_on: str = "round",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: Optional[Sequence[str]] = None,
        local_epochs: int = 1,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        head_learning_rate: float = 5e-3,
        max_length: int = 128,
        num_threads: Optional[int] = None,
        seed: int = 0,
        train_timeout: int = 0,
        validate_timeout: int = 0,
        client_mode: str = "executor",
        launch_external_process: bool = False,
        per_site_config: Optional[Dict[str, Dict[str, Any]]] = None,
        log_updates: bool = False,
        aggregation: str = "fedbip",
        aggregation_options: Optional[Dict[str, Any]] = None,
        train_lora: bool = True,
        federate_head: bool = False,
        num_labels: Optional[int] = None,
        round_eval_examples: Optional[int] = None,
        precision: str = "fp32",
        server_learning_rate: float = 1.0,
        center_similarity: bool = False,
        tracking: Optional[str] = None,
        norm_bound: Optional[float] = None,
        streaming: bool = False,
        share_lora_a: bool = False,
        modality: str = DEFAULT_MODALITY,
        gradient_accumulation_steps: int = 1,
        gradient_checkpointing: bool = False,
        max_new_tokens: int = 32,
        holdout_fraction: float = 0.0,
        partner_check: Optional[str] = None,
        resume_from: Optional[str] = None,
        site_state_root: Optional[str] = None,
        rule: Optional[AggregationRule] = None,
    ):
        arguments = dict(locals())
        validate_tracking(tracking)
        keywords = dict(
            layerwise=layerwise,
            negative=negative,
            similarity_on=similarity_on,
            center_similarity=center_similarity,
            norm_bound=norm_bound,
            streaming=streaming,
            share_lora_a=share_lora_a,
            server_learning_rate=server_learning_rate,
        )
        self.rule = self._rule(rule, aggregation, aggregation_options, keywords)
        self.server = ServerSettings.pick(arguments)
        if resume_from is not None and self.rule.nvflare_fedavg:
            raise ValueError(
                f"resume_from needs a FedBip-family aggregation (the controller's state), not {self.rule.name!r}"
            )
        if self.rule.nvflare_fedavg and federate_head and num_labels is None:
            raise ValueError(
                f"aggregation={self.rule.name!r} averages one head for everyone: federate_head=True needs num_labels "
                "(every site's shared number of labels); heads per label space need a FedBip-family aggregation"
            )
        if client_mode not in CLIENT_MODES:
            raise ValueError(f"client_mode must be one of {CLIENT_MODES}, got {client_mode!r}")
        if launch_external_process and client_mode != "client_api":
            raise ValueError("launch_external_process=True needs client_mode='client_api'")
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a Hugging Face model id or a local model folder")
        self.client = TrainSettings.pick(arguments)
        self.data = dict(data) if data is not None else {"suite": "text-tasks"}
        self.site_state_root = site_state_root
        self.client_mode = client_mode
        self.launch_external_process = launch_external_process
        self.per_site_config = None
        self.tracking = tracking

        self._client_component({})  # validates every client argument once, here
        job = FedJob(name=name, min_clients=min_clients)
        for component, component_id in self._server_components():
            job.to_server(component, id=component_id)
        job.set_app_packages([PACKAGE])
        Recipe.__init__(self, job)
        if tracking is not None:
            from nvflare.recipe.utils import add_experiment_tracking

            add_experiment_tracking(self, tracking)
        if per_site_config is not None:
            self.set_per_site_config(per_site_config)

    @staticmethod
    def _rule(
        rule: Optional[AggregationRule], aggregation: str, options: Optional[Dict[str, Any]], keywords: Dict[str, Any]
    ) -> AggregationRule:
        """``rule``, else the rule ``aggregation`` names with ``options`` and the rule keywords set off default."""
        defaults = inspect.signature(FedBipRecipe.__init__).parameters
        given = {k: keywords[k] for k in RULE_KEYWORDS if keywords[k] != defaults[k].default}
        if rule is None:
            return make_rule(aggregation, **{**dict(options or {}), **given})
        if not isinstance(rule, AggregationRule):
            raise ValueError(f"rule must be an AggregationRule (see fedbip_nvflare.server.rules), got {rule!r}")
        if given or options or aggregation != defaults["aggregation"].default:
            raise ValueError(
                "rule= replaces aggregation, aggregation_options and the rule keywords "
                f"{list(RULE_KEYWORDS)}: pass the rule's options to the rule, got {sorted(given) or aggregation!r}"
            )
        return rule

    @property
    def model(self) -> str:
        """The HF model id or local folder."""
        return self.server.model

    @property
    def modality(self) -> str:
        """What the sites fine-tune."""
        return self.server.modality

    @property
    def target_modules(self) -> List[str]:
        """The modules LoRA adapts (the modality's default unless given)."""
        return list(self.server.target_modules)

    def _server_components(self) -> List[tuple]:
        """The server's workflows and components, in order, as ``(component, id)`` pairs."""
        if self.rule.nvflare_fedavg:
            from fedbip_nvflare.server.final_validation import FinalValidation
            from fedbip_nvflare.server.persistor import AdapterPersistor

            settings = self.server
            return [
                (
                    AdapterPersistor(
                        model=settings.model,
                        lora_r=settings.lora_r,
                        lora_alpha=settings.lora_alpha,
                        lora_dropout=settings.lora_dropout,
                        target_modules=list(settings.target_modules),
                        seed=settings.seed,
                        num_labels=settings.num_labels if settings.federate_head else None,
                        modality=settings.modality,
                    ),
                    "persistor",
                ),
                (self._fedavg(), "fedavg"),
                (
                    FinalValidation(
                        method=self.rule.method_name(),
                        num_rounds=settings.num_rounds,
                        persistor_id="persistor",
                        min_clients=settings.min_clients,
                    ),
                    "final",
                ),
            ]
        return [(FedBipController(rule=self.rule, **self.server.to_dict()), "fedbip_controller")]

    def _fedavg(self):
        """NVFlare's own FedAvg; with a server learning rate other than 1, ``ServerLrFedAvg``."""
        from nvflare.app_common.workflows.fedavg import FedAvg

        from fedbip_nvflare.server.fedavg import ServerLrFedAvg

        kwargs = dict(num_clients=self.server.min_clients, num_rounds=self.server.num_rounds, persistor_id="persistor")
        eta = self.rule.server_learning_rate
        if eta == 1.0:
            return FedAvg(**kwargs)
        return ServerLrFedAvg(server_learning_rate=eta, **kwargs)

    # -- per-site configuration ------------------------------------------------------------------
    def _apply_per_site_config(self, config: Dict[str, Dict]) -> None:
        for site, site_config in config.items():
            unknown = sorted(set(site_config) - set(SITE_CONFIG_KEYS))
            if unknown:
                raise ValueError(
                    f"per_site_config[{site!r}] has unknown keys {unknown}; allowed: {list(SITE_CONFIG_KEYS)}"
                )
            self._client_component(site_config)
        self.per_site_config = config

    def _client_settings(self, site_config: Dict[str, Any]) -> Dict[str, Any]:
        """The executor's arguments for a site: the shared model/LoRA settings, its data and TrainSettings."""
        data = site_config.get("data", self.data)
        if not isinstance(data, dict):
            raise ValueError(f"data must be a dict data configuration, got {data!r}")
        overrides = {k: v for k, v in site_config.items() if k != "data"}
        return dict(
            model=self.server.model,
            data=check_data_config(data, self.server.modality),
            lora_r=self.server.lora_r,
            lora_alpha=self.server.lora_alpha,
            lora_dropout=self.server.lora_dropout,
            target_modules=list(self.server.target_modules),
            modality=self.server.modality,
            settings=dataclasses.replace(self.client, **overrides),
            site_state_root=self.site_state_root,
        )

    def _client_component(self, site_config: Dict[str, Any]):
        settings = self._client_settings(site_config)
        executor = FedBipExecutor(**settings)  # validates the site's arguments
        if self.client_mode == "executor":
            return executor
        from nvflare.fuel.utils.constants import FrameworkType

        train = settings.pop("settings")
        return CustomScriptRunner(
            script=CLIENT_SCRIPT,
            script_args=client_script_args({**settings, **train.to_dict()}),
            launch_external_process=self.launch_external_process,
            framework=FrameworkType.RAW,
        )

    def _prepare_client_apps(self) -> None:
        tasks = [K.TRAIN_TASK, K.VALIDATE_TASK]
        if not self.per_site_config:
            self._add_client(self._client_component({}), None, tasks)
            return
        for site, site_config in self.per_site_config.items():
            self._add_client(self._client_component(site_config), site, tasks)

    def _add_client(self, component, site: Optional[str], tasks: List[str]) -> None:
        kwargs = {"tasks": tasks} if self.client_mode == "executor" else {}
        if site is None:
            self._job.to_clients(component, **kwargs)
        else:
            self._job.to(component, site, **kwargs)
        if self.tracking is not None:  # sites' analytics events go to the server's receiver
            from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE
            from nvflare.app_common.widgets.convert_to_fed_event import ConvertToFedEvent

            converter = ConvertToFedEvent(events_to_convert=[ANALYTIC_EVENT_TYPE])
            if site is None:
                self._job.to_clients(converter, id="event_to_fed")
            else:
                self._job.to(converter, site, id="event_to_fed")

    def run(self, env: ExecEnv, server_exec_params: Optional[dict] = None, client_exec_params: Optional[dict] = None):
        """Runs the job in ``env``; ``SimEnv(num_clients=N)`` with per-site configs runs sites site-1..site-N.

        NVFlare's simulator takes either a client count or named sites; with ``per_site_config`` this recipe
        names the sites itself: every site not in ``per_site_config`` gets the shared configuration.

        Raises:
            ValueError: ``per_site_config`` names a site that is not among site-1..site-N.
        """
        return super().run(self._named_sim_env(env), server_exec_params, client_exec_params)

    def _named_sim_env(self, env: ExecEnv) -> ExecEnv:
        """``env``, or for a ``SimEnv(num_clients=N)`` with per-site configs a copy naming sites site-1..site-N."""
        from nvflare.recipe.sim_env import SimEnv

        if not self.per_site_config or not isinstance(env, SimEnv) or env.clients is not None:
            return env
        names = site_names(env.num_clients)
        unknown = sorted(set(self.per_site_config) - set(names))
        if unknown:
            raise ValueError(
                f"per_site_config names {unknown}, not among the {env.num_clients} simulated sites {names}: use "
                "SimEnv(clients=[...]) with those names, or more clients"
            )
        if self._client_apps_prepared:
            raise ValueError(
                "per_site_config with SimEnv(num_clients=N) needs the recipe's client apps unprepared (no client "
                f"filters or components added): use SimEnv(clients={names})"
            )
        self.per_site_config = {site: self.per_site_config.get(site, {}) for site in names}
        named = copy.copy(env)
        named.clients = names
        return named

    def process_env(self, env: ExecEnv):
        """In a simulator workspace, allow-lists this package's components (installed-package mode)."""
        from nvflare.recipe.sim_env import SimEnv

        if isinstance(env, SimEnv) and self.client_mode == "executor":
            allow_fedbip_components(os.path.join(env.workspace_root, self.name))
