"""FedBip inside stock NVFlare workflows: a ModelAggregator plus a per-recipient TASK_DATA filter.

NVFlare's FedAvg and ScatterAndGather broadcast one global model, and an aggregator returns one model. FedBip
therefore works in two places: :class:`FedBipModelAggregator` keeps every client's personalized θ̄_i on the
server, and :class:`FedBipPersonalizationFilter`, which NVFlare runs once per recipient on outgoing task data,
swaps the broadcast model for the recipient's own θ̄_i. The aggregator records what each client was sent, so
``τ_i = θ_i − θ̄_i`` is exact whether a client returns FULL weights or a DIFF.
"""

import json
import os
import threading
import weakref
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.aggregators.model_aggregator import ModelAggregator
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import check_update
from fedbip_nvflare.models import is_head
from fedbip_nvflare.server.rule import AggregationRule
from fedbip_nvflare.server.rules import as_rule
from fedbip_nvflare.server.state import ClientStateStore, run_key_from, save_round_updates
from fedbip_nvflare.tracking import track_round_matrices

Params = Dict[str, torch.Tensor]

DEFAULT_NAME = "fedbip"
_AGGREGATORS: Dict[str, "weakref.ReferenceType[FedBipModelAggregator]"] = {}
_REGISTRY_LOCK = threading.Lock()


def find_aggregator(name: str = DEFAULT_NAME) -> Optional["FedBipModelAggregator"]:
    """The FedBipModelAggregator of this name built last in this process (the server job's), if any."""
    with _REGISTRY_LOCK:
        ref = _AGGREGATORS.get(name)
    return ref() if ref is not None else None


def _as_tensors(params: Mapping[str, Any]) -> Params:
    return {
        n: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).float() for n, v in params.items()
    }


def _like(template: Mapping[str, Any], params: Params) -> Dict[str, Any]:
    """``params`` in the container type and dtype of ``template``'s values (numpy arrays or torch tensors)."""
    out = {}
    for name, ref in template.items():
        value = params[name].detach()
        if isinstance(ref, torch.Tensor):
            out[name] = value.to(dtype=ref.dtype).clone()
        else:
            out[name] = value.cpu().numpy().astype(np.asarray(ref).dtype, copy=True)
    return out


def _client_of(model: FLModel, fl_ctx: Optional[FLContext]) -> Optional[str]:
    meta = model.meta or {}
    name = meta.get("client_name") or meta.get("site_name")
    if not name and fl_ctx is not None and fl_ctx.get_peer_context() is not None:
        name = fl_ctx.get_peer_context().get_identity_name()
    return name


class FedBipModelAggregator(ModelAggregator):
    """FedBip's personalized aggregation as an NVFlare ``ModelAggregator`` for stock workflows.

    ``FedAvgRecipe(aggregator=...)``, ``FedAvg(aggregator=...)`` and ``ScatterAndGather(aggregator_id=...)``
    accept it. It must be paired with :class:`FedBipPersonalizationFilter` on the server's train task
    (``fedbip_nvflare.add_fedbip_personalization`` adds both): the filter sends each client its own θ̄_i and
    tells this aggregator what it sent. Without the filter every result is rejected and the round fails
    with an error that says so.

    Per round it checks each result against what the client was sent (names, shapes, finite values; a
    rejected client keeps its θ̄_i), computes every accepted client's next θ̄_i with its rule (the same rule
    objects ``FedBipController`` takes), persists θ̄⁰ and every θ̄_i to ``<run dir>/fedbip/state`` and appends
    the similarity and weight matrices to ``<run dir>/fedbip/rounds.jsonl`` and, as ``FedBipController`` does, to
    NVFlare's experiment tracking (``similarity/<site>`` and ``weights/<site>`` per round; a job with a receiver,
    e.g. ``nvflare.recipe.utils.add_experiment_tracking(recipe, "tensorboard")``, records them).

    Heads per label space are not supported: the workflow's model has one shape for everyone, so a head in it is
    one head shared by all clients, which is sound only when every client has the same label space. A round whose
    clients report different label spaces (``label_space`` in their result's meta) while the model holds a head
    fails with an error naming them; for heads combined per label space use ``FedBipRecipe(federate_head=True)``.

    What it returns to the workflow: the uniform mean of the personalized models of the clients seen so far
    (FULL weights, with the example-weighted mean of the clients' metrics). The workflow saves it as its
    global model and broadcasts it, and the filter replaces it with each recipient's own θ̄_i, so no client
    trains from it; it is the federation's consensus for whatever the workflow does with a global model
    (persistor, model selection, cross-site evaluation). A client seen for the first time gets θ̄⁰ (the
    first model the workflow sent), not the consensus, as in ``FedBipController``.

    The run's key (``FedBipKeys.RUN_KEY``, kept in the persisted state and reused with ``resume_from``) goes with
    every personalized model, so sites running FedBip's executor or Client API script snapshot their private state
    under it. A site whose state folder does not hold the run's state restores its snapshot of the last round before
    the task's round, so resume the workflow at the round after the persisted one (``FedAvg``/``ScatterAndGather``
    ``start_round``): a workflow that starts again at round 0 finds no earlier snapshot, and the sites go on with the
    state they have.

    Args:
        rule: The aggregation rule: an ``AggregationRule`` (e.g. ``FedBipRule(layerwise=True)`` or a baseline), a
            name registered in ``fedbip_nvflare.server.rules.RULES`` (default options), or None for
            ``FedBipRule()``. Rules that are NVFlare's FedAvg workflow themselves are refused.
        min_clients: Least number of valid updates to aggregate a round (fewer: every θ̄_i stays).
        resume_from: A ``state`` folder of an earlier run (this aggregator's or FedBipController's) to continue
            from: its θ̄⁰ and every client's θ̄_i.
        log_updates: Also save, every round, what each client was sent and returned (``<run dir>/fedbip/updates``).
        aggregator_name: Links the aggregator to its filter (change it only to run two in one server job).

    Raises:
        ValueError: A bad ``min_clients`` or ``aggregator_name``, or a rule that cannot run here.
    """

    def __init__(
        self,
        rule: Union[AggregationRule, str, None] = None,
        min_clients: int = 1,
        resume_from: Optional[str] = None,
        log_updates: bool = False,
        aggregator_name: str = DEFAULT_NAME,
    ):
        super().__init__()
        self.rule = as_rule(rule)
        self.min_clients = min_clients
        self.resume_from = resume_from
        self.log_updates = log_updates
        self.aggregator_name = aggregator_name
        if self.rule.nvflare_fedavg:
            raise ValueError(f"aggregation {self.rule.name!r} is a workflow of its own, not a drop-in aggregation")
        if self.rule.needs_num_rounds:
            raise ValueError(
                f"aggregation {self.rule.name!r} changes with the round and needs the number of rounds, which the "
                "drop-in aggregator does not know: use FedBipRecipe or FedBipController"
            )
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 1:
            raise ValueError(f"min_clients must be an int >= 1, got {min_clients!r}")
        if not isinstance(aggregator_name, str) or not aggregator_name:
            raise ValueError(f"aggregator_name must be a non-empty string, got {aggregator_name!r}")
        self._lock = threading.RLock()
        self._out_dir: Optional[str] = None
        self.theta0: Params = {}
        self.thetas: Dict[str, Params] = {}
        self._next_round = 0
        self._sent: Dict[str, Tuple[Optional[int], Params]] = {}
        self._template: Dict[str, Any] = {}
        self._engine: Optional[Any] = None
        self._run_key: Optional[str] = None
        self._reset_round()
        with _REGISTRY_LOCK:
            _AGGREGATORS[aggregator_name] = weakref.ref(self)

    def _reset_round(self):
        self._returned: Dict[str, Params] = {}
        self._rejected: Dict[str, str] = {}
        self._metrics: Dict[str, dict] = {}
        self._steps: Dict[str, float] = {}
        self._spaces: Dict[str, str] = {}
        self._round: Optional[int] = None

    # -- the filter's side ---------------------------------------------------------------------
    def bind(self, fl_ctx: FLContext) -> None:
        """Finds the engine and run folder (and loads ``resume_from``) the first time a context is available."""
        with self._lock:
            if self._engine is None:
                self._engine = fl_ctx.get_engine()
            if self._out_dir is not None:
                return
            run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
            self._out_dir = os.path.join(run_dir, K.STATE_DIR)
            if self.resume_from:
                last, self.theta0, self.thetas, extra = ClientStateStore(self.resume_from).load()
                self._next_round = last + 1
                self._run_key = run_key_from(extra)
                self.log_info(fl_ctx, f"resumed FedBip state from {self.resume_from} (after round {last})")

    @property
    def run_key(self) -> str:
        """The run's key (the resumed state's, else a new one made on first use); sites snapshot their private state
        under it."""
        with self._lock:
            if self._run_key is None:
                self._run_key = run_key_from()
            return self._run_key

    def personalize(self, client: str, outgoing: Mapping[str, Any], rnd: Optional[int]) -> Dict[str, Any]:
        """The model ``client`` gets instead of ``outgoing``: its θ̄_i (θ̄⁰ if new), in ``outgoing``'s format.

        Args:
            client: The recipient.
            outgoing: The workflow's broadcast FULL weights (numpy arrays or torch tensors).
            rnd: The task's round (recorded to match the client's result).

        Raises:
            ValueError: The outgoing model's tensors differ from the personalized models'.
        """
        with self._lock:
            if not self.theta0:
                self.theta0 = _as_tensors(outgoing)
            if not self._template:
                self._template = {n: outgoing[n] for n in outgoing}
            personal = self.thetas.get(client, self.theta0)
            if set(personal) != set(outgoing):
                missing, extra = sorted(set(personal) - set(outgoing)), sorted(set(outgoing) - set(personal))
                raise ValueError(
                    f"the workflow's model no longer matches FedBip's per-client models (missing {missing[:3]}, "
                    f"extra {extra[:3]}): resume only with the same model and LoRA configuration"
                )
            self._sent[client] = (rnd, personal)
            return _like(outgoing, personal)

    # -- the workflow's side -------------------------------------------------------------------
    def accept(self, shareable: Shareable, fl_ctx: FLContext) -> bool:
        """ScatterAndGather's entry point: names the client from the peer context, then :meth:`accept_model`."""
        self.fl_ctx = fl_ctx
        model = FLModelUtils.from_shareable(shareable, fl_ctx)
        model.meta = dict(model.meta or {})
        model.meta.setdefault("client_name", fl_ctx.get_peer_context().get_identity_name())
        return self.accept_model(model)

    def _reject(self, client: str, reason: str) -> bool:
        self._rejected[client] = reason
        self.error(f"FedBip round {self._round}: rejected update of {client}: {reason}; it keeps its model")
        return False

    def accept_model(self, model: FLModel) -> bool:
        """Checks one client's result against what it was sent and keeps its θ_i for :meth:`aggregate_model`."""
        client = _client_of(model, self.fl_ctx)
        with self._lock:
            if client is None:
                return self._reject("<unknown>", "the result does not name its client")
            if self._round is None and model.current_round is not None:
                self._round = int(model.current_round)
            if client not in self._sent:
                return self._reject(
                    client,
                    "no personalized model was sent to it this round: add FedBipPersonalizationFilter as a server "
                    "TASK_DATA filter on the train task (fedbip_nvflare.add_fedbip_personalization adds it)",
                )
            rnd, sent = self._sent[client]
            if rnd is not None and model.current_round is not None and int(model.current_round) != rnd:
                return self._reject(client, f"result of round {model.current_round} but it was sent round {rnd}")
            params = model.params or {}
            reason = check_update(params, sent)
            if reason is None and model.params_type not in (None, ParamsType.FULL, ParamsType.DIFF):
                reason = f"params_type {model.params_type} (FedBip needs FULL weights or a DIFF)"
            if reason is not None:
                return self._reject(client, reason)
            values = _as_tensors({n: params[n] for n in sent})
            if model.params_type == ParamsType.DIFF:
                values = {n: sent[n] + values[n] for n in sent}
            self._returned[client] = values
            self._metrics[client] = {k: float(v) for k, v in (model.metrics or {}).items() if _is_number(v)}
            self._steps[client] = float((model.meta or {}).get("NUM_STEPS_CURRENT_ROUND", 1.0) or 1.0)
            if (model.meta or {}).get(K.LABEL_SPACE) is not None:
                self._spaces[client] = str(model.meta[K.LABEL_SPACE])
            return True

    def aggregate_model(self) -> FLModel:
        """Updates the accepted clients' θ̄_i, persists them, and returns the consensus (see the class doc).

        Raises:
            RuntimeError: Results arrived but no model went out through the filter (it is not installed).
        """
        with self._lock:
            if not self._sent and self._rejected:
                raise RuntimeError(
                    "FedBipModelAggregator received results but FedBipPersonalizationFilter sent no model: the "
                    "clients trained the broadcast global model, so FedBip cannot personalize. Add the filter as a "
                    "server TASK_DATA filter on the train task (fedbip_nvflare.add_fedbip_personalization)."
                )
            rnd = self._round if self._round is not None else self._next_round
            record: dict = {"round": rnd, "rejected": dict(self._rejected)}
            if len(self._returned) >= self.min_clients and self._returned:
                self._check_one_label_space()
                sent = {c: self._sent[c][1] for c in self._returned}
                thetas, rule_record = self.rule.apply(sent, self._returned, lambda _: self.theta0)
                if self.log_updates and self._out_dir is not None:
                    save_round_updates(self._out_dir, rnd, sent, self._returned)
                self.thetas.update(thetas)
                record.update(rule_record)
            else:
                self.warning(
                    f"FedBip round {rnd}: only {len(self._returned)} valid update(s), fewer than "
                    f"min_clients={self.min_clients}: no aggregation, every client keeps its model"
                )
                record.update({"clients": sorted(self._returned), "aggregated": False})
            record["metrics"] = self._metrics
            self._persist(rnd, record)
            track_round_matrices(self, self._engine, record, rnd)
            result = self._consensus(rnd)
            self._sent = {}
            self._next_round = rnd + 1
            self._reset_round()
            return result

    def _check_one_label_space(self) -> None:
        """Raises RuntimeError if the model holds a head and the round's clients report different label spaces."""
        heads = sorted(n for n in self.theta0 if is_head(n))
        spaces = {c: self._spaces[c] for c in self._returned if c in self._spaces}
        if heads and len(set(spaces.values())) > 1:
            raise RuntimeError(
                f"FedBip drop-in: the model holds a head ({heads[0]}, ...) but this round's clients have different "
                f"label spaces {spaces}; the drop-in shares one head, so it would mix heads of different label "
                "spaces. Heads per label space are not supported in the drop-in: keep heads private (no head in the "
                "workflow's model) or use FedBipRecipe(federate_head=True), which combines heads per label space."
            )

    def options(self) -> Dict[str, Any]:
        """The aggregation rule's name and options, as recorded in results."""
        return {"aggregation": self.rule.name, **self.rule.options()}

    def final_models(self, clients: Sequence[str]) -> Dict[str, Params]:
        """Each client's current θ̄_i (θ̄⁰ for a client never aggregated), e.g. for a final validation."""
        with self._lock:
            return {c: self.thetas.get(c, self.theta0) for c in clients}

    def reset_stats(self):
        """Forgets the round's results (the per-client models and what was sent stay)."""
        with self._lock:
            self._reset_round()

    def _consensus(self, rnd: int) -> FLModel:
        models = list(self.thetas.values()) or [self.theta0]
        mean = {n: torch.stack([m[n] for m in models]).mean(dim=0) for n in self.theta0}
        names = set().union(*self._metrics.values()) if self._metrics else set()
        metrics = {
            k: sum(self._steps[c] * m[k] for c, m in self._metrics.items() if k in m)
            / sum(self._steps[c] for c, m in self._metrics.items() if k in m)
            for k in names
        }
        return FLModel(
            params=_like(self._template or self.theta0, mean),
            params_type=ParamsType.FULL,
            metrics=metrics or None,
            current_round=rnd,
            meta={"nr_aggregated": len(self._returned)},
        )

    def _persist(self, rnd: int, record: dict) -> None:
        if self._out_dir is None:
            return
        os.makedirs(self._out_dir, exist_ok=True)
        with open(os.path.join(self._out_dir, K.ROUNDS_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")
        ClientStateStore(os.path.join(self._out_dir, "state")).save(
            rnd, self.theta0, self.thetas, extra={K.RUN_KEY: self.run_key}
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


class FedBipPersonalizationFilter(Filter):
    """Server TASK_DATA filter: replaces the outgoing global model with the recipient's own θ̄_i, and adds the run's
    key (``FedBipKeys.RUN_KEY``) to its meta.

    NVFlare runs server task-data filters once per recipient, with the recipient in the context's peer; this
    filter asks the job's :class:`FedBipModelAggregator` for that client's model. Tasks other than
    ``task_names`` pass unchanged. If the job has no FedBipModelAggregator, the filter stops the job with a
    system panic naming the problem, rather than letting clients train on the shared model.

    Args:
        task_names: Tasks whose model is personalized (the workflow's train task).
        aggregator_name: The ``name`` of the FedBipModelAggregator to pair with.
    """

    def __init__(self, task_names: Sequence[str] = ("train",), aggregator_name: str = DEFAULT_NAME):
        super().__init__()
        self.task_names = list(task_names)
        self.aggregator_name = aggregator_name
        if not self.task_names or not all(isinstance(t, str) and t for t in self.task_names):
            raise ValueError(f"task_names must be a non-empty list of task names, got {task_names!r}")

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME) or shareable.get_header(ReservedKey.TASK_NAME)
        if task not in self.task_names:
            return shareable
        peer = fl_ctx.get_peer_context()
        client = peer.get_identity_name() if peer is not None else None
        aggregator = find_aggregator(self.aggregator_name)
        if aggregator is None or client is None:
            problem = (
                f"no FedBipModelAggregator named {self.aggregator_name!r} in this server job"
                if aggregator is None
                else "the task's recipient is unknown"
            )
            message = f"FedBipPersonalizationFilter cannot personalize task {task!r}: {problem}"
            self.system_panic(message, fl_ctx)
            raise RuntimeError(message)
        dxo = from_shareable(shareable)
        if dxo.data_kind != DataKind.WEIGHTS:
            raise ValueError(f"task {task!r} carries {dxo.data_kind}; FedBip personalizes FULL weights (WEIGHTS)")
        aggregator.bind(fl_ctx)
        rnd = shareable.get_header(AppConstants.CURRENT_ROUND)
        personal = aggregator.personalize(client, dxo.data, None if rnd is None else int(rnd))
        meta = {**dxo.meta, K.RUN_KEY: aggregator.run_key}
        return DXO(data_kind=dxo.data_kind, data=personal, meta=meta).update_shareable(shareable)
