"""FedBipController: per-client personalized aggregation as an NVFlare ModelController."""

import json
import os
import time
from typing import Dict, List, Optional, Sequence

import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import (
    NEGATIVE_POLICIES,
    SIMILARITY_ON,
    apply_update,
    check_update,
    clip_to_median_norm,
    combine,
    task_vector,
)
from fedbip_nvflare.core.baselines import fedamp_weights, group_weights, local_weights
from fedbip_nvflare.modalities import DEFAULT_MODALITY, default_targets, get_modality
from fedbip_nvflare.models import (
    HEAD_PREFIX,
    LoraSettings,
    initial_adapter,
    initial_head,
    is_head,
    resolve_model_path,
)
from fedbip_nvflare.results import matrices_of
from fedbip_nvflare.server.rule import FedBipRule, with_heads
from fedbip_nvflare.server.state import ClientStateStore, save_round_updates
from fedbip_nvflare.server.targeted import TargetedTasksController
from fedbip_nvflare.tracking import track_matrix

Params = Dict[str, torch.Tensor]

AGGREGATIONS = ("fedbip", "local", "fedamp", "oracle-groups")


class FedBipController(TargetedTasksController):
    """Runs FedBip: every round each client gets one task with only its own θ̄_i, and the server
    updates ``θ̄_i ← θ̄_i + Σ_k p_ik τ_k`` from the FULL federated parameters the clients return.

    After the last round each client gets its final θ̄_i in a validate task; the server writes
    ``<run dir>/fedbip/results.json`` (per-client results), ``rounds.jsonl`` (similarity and weight
    matrices, rejections, metrics and ``aggregation_s``, the seconds ``aggregate_round`` took, per round) and
    ``state/`` (θ̄⁰ and every θ̄_i, every round).

    A client that fails, times out or returns an invalid update (NaN/Inf, wrong names or shapes) is
    logged and treated as not having reported: it keeps its θ̄_i and rejoins next round.

    Args:
        model: HF model id or local folder; only its config is read, to build θ̄⁰'s shapes.
        num_rounds: Number of FedBip rounds.
        min_clients: Least number of valid updates needed to aggregate a round; with fewer, the round's
            updates are dropped (every θ̄_i stays) and a warning says so.
        layerwise: FedBip-L (similarities and weights per layer group).
        negative: Negative-cosine policy: "clip" (default), "keep" (the paper's formula) or "keep-bounded".
        similarity_on: "round" (cosine of this round's τ, the paper's rule) or "cumulative" (of θ_i − θ̄⁰).
        center_similarity: Beyond the paper: measure cosines after removing the mean vector of the round's
            clients (what all of them share); the method is then named with "-centered".
        lora_r: LoRA rank (must equal the clients').
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (must equal the clients'; None: the modality's default).
        seed: Seed of θ̄⁰.
        train_timeout: Seconds a client may take for a train task (0: no limit).
        validate_timeout: Seconds a client may take for the final validate task (0: no limit).
        resume_from: A ``state`` folder of an earlier run to continue from (its next round).
        log_updates: Also save, every round, what each client was sent and returned (for audits/tests).
        train_task_name: Name of the train task.
        validate_task_name: Name of the validate task.
        aggregation: The server rule: "fedbip" (default), or a baseline run through the same workflow:
            "local" (no mixing), "fedamp" (attentive message passing on the raw parameters) or
            "oracle-groups" (uniform averaging within known client groups).
        aggregation_options: Options of the baseline rule: ``{"sigma", "self_weight"}`` for "fedamp",
            ``{"groups": {client: group}}`` for "oracle-groups".
        federate_head: Federate the classification head with the LoRA tensors, under the same weights. Heads
            are combined only among clients of the same label space (sites report it); the similarity includes
            them only when every client of the round shares one label space.
        num_labels: With ``federate_head``, the number of labels every client shares: θ̄⁰ then holds the head
            and sends it from round 0. None: heads join per label space with each client's first result,
            starting from the same fresh head the site built (``initial_head``).
        norm_bound: Beyond the paper, against outsized updates: clip each task vector to this multiple of the
            round's median norm before combining (None: off). Cosines and weights are unchanged.
        streaming: Compute each client's personalized update only when its model is built (peak memory of one
            update instead of N, for many clients or large adapters; N passes over the updates instead of one).
        modality: What the sites train, a key of ``fedbip_nvflare.modalities.MODALITIES`` ("text", "vision",
            "causal-lm"); it decides how θ̄⁰ is built from the model's configuration.
    """

    def __init__(
        self,
        model: str,
        num_rounds: int = 3,
        min_clients: int = 1,
        layerwise: bool = False,
        negative: str = "clip",
        similarity_on: str = "round",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: Optional[Sequence[str]] = None,
        seed: int = 0,
        train_timeout: int = 0,
        validate_timeout: int = 0,
        resume_from: Optional[str] = None,
        log_updates: bool = False,
        train_task_name: str = K.TRAIN_TASK,
        validate_task_name: str = K.VALIDATE_TASK,
        aggregation: str = "fedbip",
        aggregation_options: Optional[dict] = None,
        federate_head: bool = False,
        num_labels: Optional[int] = None,
        center_similarity: bool = False,
        norm_bound: Optional[float] = None,
        streaming: bool = False,
        modality: str = DEFAULT_MODALITY,
    ):
        super().__init__(persistor_id="", ignore_result_error=True)
        get_modality(modality)  # fails early on an unknown modality
        self.modality = modality
        self.model = model
        self.num_rounds = num_rounds
        self.min_clients = min_clients
        self.layerwise = layerwise
        self.negative = negative
        self.similarity_on = similarity_on
        self.center_similarity = bool(center_similarity)
        self.norm_bound = norm_bound
        self.streaming = bool(streaming)
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = list(target_modules if target_modules is not None else default_targets(modality))
        self.seed = seed
        self.train_timeout = train_timeout
        self.validate_timeout = validate_timeout
        self.resume_from = resume_from
        self.log_updates = log_updates
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self.aggregation = aggregation
        self.aggregation_options = dict(aggregation_options or {})
        validate_fedbip_options(
            num_rounds, min_clients, negative, similarity_on, train_timeout, validate_timeout, norm_bound
        )
        self.federate_head = federate_head
        self.num_labels = num_labels
        validate_aggregation(aggregation, self.aggregation_options)
        if norm_bound is not None and aggregation != "fedbip":
            raise ValueError(f"norm_bound applies to FedBip's rule only, not to aggregation {aggregation!r}")
        validate_head_options(federate_head, num_labels)
        self._lora = LoraSettings(lora_r, lora_alpha, lora_dropout, tuple(self.target_modules))
        self._rule = FedBipRule(layerwise, negative, similarity_on, self.center_similarity, norm_bound, self.streaming)
        self.theta0: Params = {}
        self.thetas: Dict[str, Params] = {}
        self.client_info: Dict[str, dict] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _accept(self, rnd: int, sent: Dict[str, Params], results: Dict[str, FLModel]):
        accepted: Dict[str, Params] = {}
        rejected: Dict[str, str] = {}
        for client, result in results.items():
            params = result.params or {}
            reason = self._join_head(client, params, sent)
            reason = reason or check_update(params, sent[client])
            if reason is None and result.params_type not in (None, ParamsType.FULL):
                reason = f"params_type {result.params_type} (FedBip needs the FULL federated parameters)"
            if reason is not None:
                rejected[client] = reason
                self.error(f"round {rnd}: rejected update of {client}: {reason}; it keeps its model this round")
                continue
            accepted[client] = {n: torch.as_tensor(params[n]).float() for n in sent[client]}
            info = self.client_info.setdefault(client, {})
            for key in (K.TASK, K.N_TRAIN, K.N_TEST, K.LABEL_SPACE):
                if key in result.meta:
                    info[key] = result.meta[key]
            if rnd == 0 and K.ACCURACY_LOCAL in (result.metrics or {}):
                info["accuracy_before"] = float(result.metrics[K.ACCURACY_LOCAL])
            info.setdefault("history", []).append(
                {"round": rnd, **{k: float(v) for k, v in (result.metrics or {}).items()}}
            )
        return accepted, rejected

    def _join_head(self, client: str, params: dict, sent: Dict[str, Params]) -> Optional[str]:
        """Heads federated per label space join with the client's first result: its θ̄ is the fresh head.

        When a federated head was not sent (it is not in θ̄⁰), the returned head's label count picks the
        fresh head every site starts from (``initial_head``); ``sent[client]`` gets it, so the head's task
        vector is exact. Returns a rejection reason if the returned head is unusable.
        """
        if not self.federate_head or any(is_head(n) for n in sent[client]):
            return None
        weight = params.get(HEAD_PREFIX + "weight")
        shape = tuple(getattr(weight, "shape", ()))
        if len(shape) != 2 or shape[0] < 2:
            return f"federate_head is on but the result has no usable {HEAD_PREFIX}weight (shape {shape})"
        sent[client] = {**sent[client], **initial_head(shape[0], shape[1], self.seed)}
        return None

    def _theta0_of(self, params: Params) -> Params:
        """θ̄⁰ for a client with these parameters: θ̄⁰, plus its fresh head if heads join per label space."""
        weight = params.get(HEAD_PREFIX + "weight")
        if weight is None or HEAD_PREFIX + "weight" in self.theta0:
            return self.theta0
        return {**self.theta0, **initial_head(weight.shape[0], weight.shape[1], self.seed)}

    def _label_spaces(self, clients: List[str], accepted: Dict[str, Params]) -> Dict[str, str]:
        """``{client: label space}`` from the clients' metadata, else from their head's label count."""
        spaces = {}
        for c in clients:
            head = accepted[c].get(HEAD_PREFIX + "weight")
            fallback = f"{head.shape[0]}-labels" if head is not None else "no-head"
            spaces[c] = str(self.client_info.get(c, {}).get(K.LABEL_SPACE) or fallback)
        return spaces

    def _split_heads(self, clients: List[str], accepted: Dict[str, Params]):
        """Which tensors all clients combine, and the per-label-space heads (None: one shared label space).

        Returns:
            ``(shared_names, spaces)``: every federated tensor when the round's clients share one label space
            (or heads are private), else the non-head tensors and ``{client: label space}`` for the heads.
        """
        names = list(accepted[clients[0]])
        spaces = self._label_spaces(clients, accepted)
        if not self.federate_head or len(set(spaces.values())) == 1:
            return names, None
        return [n for n in names if not is_head(n)], spaces

    def aggregate_round(self, rnd: int, sent: Dict[str, Params], accepted: Dict[str, Params]) -> Optional[dict]:
        """Updates ``self.thetas`` from the accepted FULL parameters; returns the round's record."""
        if len(accepted) < self.min_clients:
            self.warning(
                f"round {rnd}: only {len(accepted)} valid update(s) ({sorted(accepted)}), fewer than "
                f"min_clients={self.min_clients}: no aggregation this round, every client keeps its model"
            )
            return None
        clients = sorted(accepted)
        if self.aggregation != "fedbip":
            return self._aggregate_baseline(clients, sent, accepted)
        shared, spaces = self._split_heads(clients, accepted)
        thetas, record = self._rule.apply(sent, accepted, self._theta0_of, shared, spaces)
        self.thetas.update(thetas)
        return record

    def _aggregate_baseline(self, clients: List[str], sent: Dict[str, Params], accepted: Dict[str, Params]) -> dict:
        shared, spaces = self._split_heads(clients, accepted)

        def mix(vectors: Dict[str, Params], weights: torch.Tensor) -> Dict[str, Params]:
            mixed = combine({c: {n: vectors[c][n] for n in shared} for c in clients}, weights)
            return with_heads(mixed, vectors, weights, spaces)

        if self.aggregation == "fedamp":
            weights = fedamp_weights([{n: accepted[c][n] for n in shared} for c in clients], **self.aggregation_options)
            self.thetas.update(mix(accepted, weights))
        else:
            if self.aggregation == "local":
                weights = local_weights(len(clients))
            else:
                weights = group_weights(clients, self.aggregation_options["groups"])
            updates = mix({c: task_vector(accepted[c], sent[c]) for c in clients}, weights)
            for c in clients:
                self.thetas[c] = apply_update(sent[c], updates[c])
        return {"clients": clients, "weights": weights.tolist()}

    def method_name(self) -> str:
        """The method's name in results: fedbip, fedbip-l, fedbip-cumulative, or the baseline's name."""
        if self.aggregation != "fedbip":
            return self.aggregation
        name = "fedbip-l" if self.layerwise else "fedbip"
        name += "-cumulative" if self.similarity_on == "cumulative" else ""
        return name + ("-centered" if self.center_similarity else "")

    # -- workflow ------------------------------------------------------------------------------
    def run(self):
        out_dir = self.out_dir()
        os.makedirs(out_dir, exist_ok=True)
        store = ClientStateStore(os.path.join(out_dir, "state"))
        start_round = 0
        if self.resume_from:
            last, self.theta0, self.thetas, extra = ClientStateStore(self.resume_from).load()
            self.client_info = extra.get("client_info", {})
            start_round = last + 1
            self.info(f"resumed from {self.resume_from} after round {last} with {len(self.thetas)} client states")
        else:
            head_labels = self.num_labels if self.federate_head else None
            self.theta0 = initial_adapter(
                resolve_model_path(self.model), self._lora, self.seed, head_labels, self.modality
            )
        self.info(
            f"FedBip: {len(self.theta0)} federated tensors, "
            f"{sum(t.numel() for t in self.theta0.values())} parameters"
        )

        for rnd in range(start_round, self.num_rounds):
            self.info(f"FedBip round {rnd + 1}/{self.num_rounds}")
            clients = self.sample_clients()
            sent = {c: self.thetas.get(c, self.theta0) for c in clients}
            results = self.send_to_each(self.train_task_name, rnd, sent, self.train_timeout, self.num_rounds)
            if self.abort_signal.triggered:
                return
            accepted, rejected = self._accept(rnd, sent, results)
            if self.log_updates:
                save_round_updates(self.out_dir(), rnd, sent, accepted)
            aggregation_start = time.perf_counter()
            record = self.aggregate_round(rnd, sent, accepted) or {"clients": sorted(accepted), "aggregated": False}
            aggregation_s = time.perf_counter() - aggregation_start
            record.update(
                {
                    "round": rnd,
                    "aggregation_s": aggregation_s,
                    "rejected": rejected,
                    "missing": sorted(set(clients) - set(results)),
                    "metrics": {c: {k: float(v) for k, v in (r.metrics or {}).items()} for c, r in results.items()},
                }
            )
            with open(os.path.join(out_dir, K.ROUNDS_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")
            self._log_round(rnd, record)
            store.save(rnd, self.theta0, self.thetas, extra={"client_info": self.client_info})

        self._final_validation()

    def _log_round(self, rnd: int, record: dict) -> None:
        """A summary line per round, and the round's matrices for NVFlare's experiment tracking."""
        clients = record.get("clients", [])
        received = [m.get(K.ACCURACY_RECEIVED) for m in record["metrics"].values() if K.ACCURACY_RECEIVED in m]
        mean = f"{100 * sum(received) / len(received):.2f}%" if received else "-"
        summary = f"round {rnd} done: {len(clients)} aggregated, mean accuracy of the received models {mean}"
        if record.get("rejected") or record.get("missing"):
            summary += f", rejected {sorted(record['rejected'])}, missing {record['missing']}"
        self.info(summary)
        engine = self.fl_ctx.get_engine() if self.fl_ctx is not None else None
        if engine is None:  # not running inside an NVFlare engine: nothing to track to
            return
        with engine.new_context() as ctx:
            for name in ("similarity", "weights"):
                for _, names, matrix in matrices_of(record, name):
                    track_matrix(self, ctx, name, names, matrix, rnd)

    def _final_validation(self):
        clients = self.sample_clients()
        final = {c: self.thetas.get(c, self.theta0) for c in clients}
        validated = self.send_to_each(self.validate_task_name, self.num_rounds, final, self.validate_timeout, None)
        options = {
            "aggregation": self.aggregation,
            "layerwise": self.layerwise,
            "negative": self.negative,
            "similarity_on": self.similarity_on,
            "center_similarity": self.center_similarity,
            "norm_bound": self.norm_bound,
            "federate_head": self.federate_head,
            "seed": self.seed,
            "model": self.model,
        }
        self.write_results(self.method_name(), self.num_rounds, options, self.client_info, validated, clients)


def validate_fedbip_options(
    num_rounds: int,
    min_clients: int,
    negative: str,
    similarity_on: str,
    train_timeout: int = 0,
    validate_timeout: int = 0,
    norm_bound: Optional[float] = None,
) -> None:
    """Checks FedBip's server options, raising ValueError naming the bad one and the allowed values."""
    if not isinstance(num_rounds, int) or isinstance(num_rounds, bool) or num_rounds < 1:
        raise ValueError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
    if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 1:
        raise ValueError(f"min_clients must be an int >= 1, got {min_clients!r}")
    if negative not in NEGATIVE_POLICIES:
        raise ValueError(f"negative must be one of {NEGATIVE_POLICIES}, got {negative!r}")
    if similarity_on not in SIMILARITY_ON:
        raise ValueError(f"similarity_on must be one of {SIMILARITY_ON}, got {similarity_on!r}")
    if norm_bound is not None:
        clip_to_median_norm({}, norm_bound)  # validates it
    for name, value in (("train_timeout", train_timeout), ("validate_timeout", validate_timeout)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 seconds (0: no limit), got {value!r}")


def validate_aggregation(aggregation: str, options: dict) -> None:
    """Checks the server rule and its options, raising ValueError naming what is wrong."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    allowed = {"fedbip": set(), "local": set(), "fedamp": {"sigma", "self_weight"}, "oracle-groups": {"groups"}}
    unknown = sorted(set(options) - allowed[aggregation])
    if unknown:
        raise ValueError(f"aggregation {aggregation!r} takes options {sorted(allowed[aggregation])}, got {unknown}")
    if aggregation == "oracle-groups" and not isinstance(options.get("groups"), dict):
        raise ValueError("aggregation 'oracle-groups' needs aggregation_options={'groups': {client: group}}")
    if aggregation == "fedamp":
        fedamp_weights([{}], **options)  # validates sigma and self_weight


def validate_head_options(federate_head: bool, num_labels: Optional[int]) -> None:
    """``num_labels`` is None (heads federated per label space) or the shared number of labels (>= 2)."""
    if num_labels is not None and not federate_head:
        raise ValueError("num_labels is only used with federate_head=True; remove it or federate the head")
    if num_labels is not None and (not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 2):
        raise ValueError(f"num_labels must be the shared number of labels (an int >= 2) or None, got {num_labels!r}")
