"""FedBipController: per-client personalized aggregation as an NVFlare ModelController."""

import json
import os
import time
from typing import Dict, List, Optional, Sequence, Union

import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import check_update
from fedbip_nvflare.models import HEAD_PREFIX, initial_adapter, initial_head, is_head, resolve_model_path
from fedbip_nvflare.models.backbones import DEFAULT_MODALITY
from fedbip_nvflare.server.rule import AggregationRule
from fedbip_nvflare.server.rules import as_rule
from fedbip_nvflare.server.settings import ServerSettings
from fedbip_nvflare.server.state import ClientStateStore, run_key_from, save_round_updates
from fedbip_nvflare.server.targeted import TargetedTasksController
from fedbip_nvflare.tracking import track_round_matrices

Params = Dict[str, torch.Tensor]


class FedBipController(TargetedTasksController):
    """Runs FedBip: every round each client gets one task with only its own θ̄_i, and the server
    updates ``θ̄_i ← θ̄_i + Σ_k p_ik τ_k`` from the FULL federated parameters the clients return (or whatever
    update its ``rule``, a baseline, makes).

    After the last round each client gets its final θ̄_i in a validate task; the server writes
    ``<run dir>/fedbip/results.json`` (per-client results), ``rounds.jsonl`` (similarity and weight
    matrices, rejections, metrics and ``aggregation_s``, the seconds ``aggregate_round`` took, per round) and
    ``state/`` (θ̄⁰ and every θ̄_i, every round, and the run's key).

    Every task carries the run's key (``FedBipKeys.RUN_KEY``), new for a new run and the persisted one when resuming
    (``resume_from``), so the sites restore the private state (heads, round records) they snapshotted in the crashed
    job (:mod:`fedbip_nvflare.client.site_state`).

    A client that fails, times out or returns an invalid update (NaN/Inf, wrong names or shapes) is
    logged and treated as not having reported: it keeps its θ̄_i and rejoins next round.

    Args:
        model: HF model id or local folder; only its config is read, to build θ̄⁰'s shapes.
        num_rounds: Number of FedBip rounds.
        min_clients: Least number of valid updates needed to aggregate a round; with fewer, the round's
            updates are dropped (every θ̄_i stays) and a warning says so.
        rule: The server's aggregation rule: an ``AggregationRule`` (``FedBipRule(layerwise=True)``, a baseline
            such as ``FedAMPRule(sigma=0.2)``), a name registered in ``fedbip_nvflare.server.rules.RULES`` (default
            options), or None for ``FedBipRule()``. Rules that run as NVFlare's FedAvg workflow are refused.
        lora_r, lora_alpha, lora_dropout, target_modules, seed, train_timeout, validate_timeout, resume_from,
        log_updates, federate_head, num_labels, modality: The server's settings, see
            :class:`~fedbip_nvflare.server.settings.ServerSettings` (which validates them).
        train_task_name: Name of the train task.
        validate_task_name: Name of the validate task.

    Raises:
        ValueError: A bad setting (naming it), or a rule that cannot run in this workflow.
    """

    def __init__(
        self,
        model: str,
        num_rounds: int = 3,
        min_clients: int = 1,
        rule: Union[AggregationRule, str, None] = None,
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
        federate_head: bool = False,
        num_labels: Optional[int] = None,
        modality: str = DEFAULT_MODALITY,
    ):
        settings = ServerSettings.pick(locals())
        super().__init__(persistor_id="", ignore_result_error=True)
        # NVFlare's job export rebuilds a component from attributes named like its arguments
        for name, value in settings.to_dict().items():
            setattr(self, name, value)
        self.rule = as_rule(rule)
        if self.rule.nvflare_fedavg:
            raise ValueError(
                f"aggregation {self.rule.name!r} runs as NVFlare's FedAvg workflow, not in FedBipController: "
                f"use FedBipRecipe(aggregation={self.rule.name!r})"
            )
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self._lora = settings.lora
        self.theta0: Params = {}
        self.thetas: Dict[str, Params] = {}
        self.client_info: Dict[str, dict] = {}
        self.run_key: Optional[str] = None

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
        shared, spaces = self._split_heads(clients, accepted)
        rule = self.rule.for_round(rnd, self.num_rounds)
        thetas, record = rule.apply(sent, accepted, self._theta0_of, shared, spaces)
        self.thetas.update(thetas)
        return record

    def method_name(self) -> str:
        """The method's name in results: the rule's (fedbip, fedbip-l, fedbip-cumulative, fedamp, ...)."""
        return self.rule.method_name()

    # -- workflow ------------------------------------------------------------------------------
    def run(self):
        out_dir = self.out_dir()
        os.makedirs(out_dir, exist_ok=True)
        store = ClientStateStore(os.path.join(out_dir, "state"))
        start_round = 0
        if self.resume_from:
            last, self.theta0, self.thetas, extra = ClientStateStore(self.resume_from).load()
            self.client_info = extra.get("client_info", {})
            self.run_key = run_key_from(extra)
            start_round = last + 1
            self.info(f"resumed from {self.resume_from} after round {last} with {len(self.thetas)} client states")
        else:
            self.run_key = run_key_from()
            head_labels = self.num_labels if self.federate_head else None
            self.theta0 = initial_adapter(
                resolve_model_path(self.model), self._lora, self.seed, head_labels, self.modality
            )
        self.info(
            f"FedBip: {len(self.theta0)} federated tensors, "
            f"{sum(t.numel() for t in self.theta0.values())} parameters, run key {self.run_key}"
        )

        for rnd in range(start_round, self.num_rounds):
            self.info(f"FedBip round {rnd + 1}/{self.num_rounds}")
            clients = self.sample_clients()
            sent = {c: self.thetas.get(c, self.theta0) for c in clients}
            results = self.send_to_each(
                self.train_task_name, rnd, sent, self.train_timeout, self.num_rounds, self.run_key
            )
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
            store.save(rnd, self.theta0, self.thetas, extra={"client_info": self.client_info, K.RUN_KEY: self.run_key})

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
        track_round_matrices(self, self.fl_ctx.get_engine() if self.fl_ctx is not None else None, record, rnd)

    def _final_validation(self):
        clients = self.sample_clients()
        final = {c: self.thetas.get(c, self.theta0) for c in clients}
        validated = self.send_to_each(
            self.validate_task_name, self.num_rounds, final, self.validate_timeout, None, self.run_key
        )
        options = {
            "aggregation": self.rule.name,
            **self.rule.options(),
            "federate_head": self.federate_head,
            "seed": self.seed,
            "model": self.model,
        }
        self.write_results(
            self.method_name(), self.num_rounds, options, self.client_info, validated, clients, self.min_clients
        )
