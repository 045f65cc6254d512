"""Base of FedBip's server workflows: one targeted task per client, and the per-client results file."""

import json
import os
import time
from abc import ABC
from typing import Any, Dict, Mapping, Optional

import torch
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.exchange import to_numpy

Params = Dict[str, torch.Tensor]

# what a site's validate reply may carry into results.json
_SITE_RESULT_KEYS = (K.TASK, K.N_TRAIN, K.N_TEST, K.ADAPTER_DIR)
_SITE_FALLBACK_KEYS = ("accuracy_before", "history")


class TargetedTasksController(ModelController, ABC):
    """A ModelController that sends every client its own payload and writes ``fedbip/results.json``.

    A site's failed reply (any return code but OK) is remembered with its reason (the site's
    ``FedBipKeys.SITE_ERROR`` header, else the return code); a client without a final result gets its last
    reason as ``"error"`` in the results.
    """

    def _site_errors(self) -> Dict[str, str]:
        if not hasattr(self, "_recorded_errors"):
            self._recorded_errors: Dict[str, str] = {}
        return self._recorded_errors

    def _accept_train_result(
        self, client_name: str, result: Shareable, fl_ctx: FLContext, is_unknown_task: bool = False
    ) -> bool:
        """NVFlare's check of a reply's return code; a failed reply's reason is remembered for the results."""
        rc = result.get_return_code()
        if rc and rc != ReturnCode.OK:
            reason = result.get_header(K.SITE_ERROR) or f"{rc} (see the site's log)"
            self._site_errors()[client_name] = str(reason)
        return super()._accept_train_result(client_name, result, fl_ctx, is_unknown_task)

    def out_dir(self) -> str:
        """``<run dir>/fedbip``: where the server writes results, round logs and state."""
        return os.path.join(self.get_run_dir(), K.STATE_DIR)

    def send_to_each(
        self,
        task_name: str,
        rnd: int,
        payloads: Mapping[str, Params],
        timeout: int,
        total_rounds: Optional[int],
        run_key: Optional[str] = None,
    ) -> Dict[str, FLModel]:
        """Sends each client only its own payload, as a separate targeted task, and waits for all of them.

        Args:
            task_name: Task name.
            rnd: Round index put on the task.
            payloads: ``{client: params}``; a client receives nothing but its own entry.
            timeout: Seconds per task (0: no limit).
            total_rounds: Number of rounds put on the task.
            run_key: The run's key, put in the task's meta as ``FedBipKeys.RUN_KEY`` (None: none); sites key the
                snapshots of their private state by it.

        Returns:
            ``{client: result}`` for the clients whose result was accepted (failed, timed out or aborted
            clients are missing, and a warning names them).
        """
        results: Dict[str, FLModel] = {}

        def collect(result: FLModel) -> bool:
            results[result.meta.get("client_name")] = result
            return True

        for client, params in payloads.items():
            data = FLModel(
                params=to_numpy(params),
                params_type=ParamsType.FULL,
                current_round=rnd,
                total_rounds=total_rounds,
                meta={K.RUN_KEY: run_key} if run_key else {},
            )
            self.send_model(
                task_name=task_name, data=data, targets=[client], min_responses=1, timeout=timeout, callback=collect
            )
        while self.get_num_standing_tasks():
            if self.abort_signal.triggered:
                break
            time.sleep(self._task_check_period)
        missing = sorted(set(payloads) - set(results))
        if missing:
            self.warning(f"{task_name} round {rnd}: no valid result from {missing} (failed, timed out or aborted)")
        return results

    def write_results(
        self,
        method: str,
        num_rounds: int,
        options: Dict[str, Any],
        client_info: Mapping[str, dict],
        validated: Mapping[str, FLModel],
        clients,
        min_clients: int = 1,
    ) -> str:
        """Writes ``fedbip/results.json``: ``{"method", "num_rounds", "min_clients", "options", "clients": {...}}``.

        A client's entry merges what the server recorded (``client_info``) with its validate reply
        (final ``accuracy``, task, split sizes, adapter folder; ``accuracy_before`` and ``history`` from
        the site's own record when the server has none); a client without a validate reply has ``"error"``, the
        reason of its last failed reply (or that it sent none).
        """
        summary = {
            "method": method,
            "num_rounds": num_rounds,
            K.MIN_CLIENTS: min_clients,
            "options": options,
            "clients": {},
        }
        for client in clients:
            info = dict(client_info.get(client, {}))
            result = validated.get(client)
            if result is None:
                info[K.ERROR] = self._site_errors().get(client, "no final result (timed out, aborted or disconnected)")
            else:
                metrics, meta = result.metrics or {}, result.meta or {}
                info["accuracy"] = float(metrics.get(K.ACCURACY, float("nan")))
                info.update(  # the modality's further metrics of the final model, e.g. a causal LM's rouge_l
                    {k: float(v) for k, v in metrics.items() if k != K.ACCURACY and isinstance(v, (int, float))}
                )
                info.update({k: meta[k] for k in _SITE_RESULT_KEYS if k in meta})
                info.update({k: meta[k] for k in _SITE_FALLBACK_KEYS if k in meta and k not in info})
            summary["clients"][client] = info
        os.makedirs(self.out_dir(), exist_ok=True)
        path = os.path.join(self.out_dir(), K.RESULTS_FILE)
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
        failed = sorted(c for c in clients if c not in validated)
        self.info(f"{method} finished; per-client results in {path}" + (f"; no result from {failed}" if failed else ""))
        return path
