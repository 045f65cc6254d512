"""One site's side of FedBip, independent of how NVFlare delivers tasks (Executor or Client API).

``load_task_data`` (a site's data configuration → its task data) and ``to_numpy`` (the exchange format) are
re-exported here for the code that imports them from the client.
"""

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from fedbip_nvflare.client.self_check import check_partners, choose_start, save_own, save_received
from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.client.site_state import HISTORY_FILE, SiteSnapshots
from fedbip_nvflare.client.trainer_base import HEAD_FILE
from fedbip_nvflare.client.trainers import TRAINERS
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.data.site_data import load_task_data
from fedbip_nvflare.exchange import to_numpy
from fedbip_nvflare.models.backbones import DEFAULT_MODALITY
from fedbip_nvflare.models.lora import LoraSettings

__all__ = ["HISTORY_FILE", "SiteSession", "load_task_data", "to_numpy"]

logger = logging.getLogger(__name__)


class SiteSession:
    """A site across rounds: the trainer (model loaded once), its private head and its output folder.

    With ``snapshot_root``, the private state survives a server crash and resume (a new job with a new state
    folder): call :meth:`begin_task` with the task's run key before each task; every train task then snapshots the
    state under that key, and a task of a run whose state the folder does not hold restores it first (see
    :mod:`fedbip_nvflare.client.site_state`).

    Args:
        site_name: This site's name.
        state_dir: Folder for the site's private state (head, round record) and final personalized adapter.
        model: HF model id or local folder.
        data: Data configuration (see :func:`fedbip_nvflare.data.site_data.load_task_data`).
        lora: LoRA settings.
        settings: Training settings.
        modality: What the site trains, a key of ``fedbip_nvflare.modalities.MODALITIES``.
        snapshot_root: Folder outside the job's run folder for snapshots of the private state (None: none taken).
    """

    def __init__(
        self,
        site_name: str,
        state_dir: str,
        model: str,
        data: Mapping[str, Any],
        lora: LoraSettings,
        settings: TrainSettings,
        modality: str = DEFAULT_MODALITY,
        snapshot_root: Optional[str] = None,
    ):
        self.site_name = site_name
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        task_data = load_task_data(data, site_name, modality)  # raises for an unknown modality
        self.trainer = TRAINERS[modality](model, task_data, lora, settings)
        self.head_path = os.path.join(state_dir, HEAD_FILE)
        self.history_path = os.path.join(state_dir, HISTORY_FILE)
        if self.trainer.load_head(self.head_path):
            logger.info("%s: loaded its private head from %s", site_name, self.head_path)
        self.snapshots = SiteSnapshots(snapshot_root, site_name) if snapshot_root else None
        self.run_key: Optional[str] = None

    def begin_task(self, run_key: Optional[str], current_round: int) -> Optional[int]:
        """Before a train or validate task: remembers the task's run and brings that run's private state back if the
        state folder does not hold it (:meth:`SiteSnapshots.sync`), reloading the head.

        Args:
            run_key: The task's ``FedBipKeys.RUN_KEY`` (None: a task without one; no snapshots are taken or used).
            current_round: The task's round (a validate task's is the number of rounds).

        Returns:
            The round whose snapshot was restored, or None.
        """
        self.run_key = run_key
        if run_key is None or self.snapshots is None:
            return None
        restored = self.snapshots.sync(self.state_dir, run_key, current_round)
        if restored is not None and self.trainer.load_head(self.head_path):
            logger.info("%s: loaded its private head from %s (round %d)", self.site_name, self.head_path, restored)
        return restored

    def _info(self) -> Dict[str, Any]:
        data = self.trainer.data
        return {
            K.TASK: data.task,
            K.N_TRAIN: self.trainer.n_train,
            K.N_TEST: self.trainer.n_test,
            K.LABEL_SPACE: data.label_space,
        }

    def train(self, params: Mapping[str, Any], current_round: int) -> Tuple[Dict[str, Any], Dict[str, float], Dict]:
        """Runs one train task.

        Args:
            params: Received personalized federated tensors θ̄_i.
            current_round: Round index (0-based); in round 0 the locally trained model is also evaluated.
                With ``holdout_fraction`` or ``partner_check`` set, the site first picks its starting point (see
                :mod:`fedbip_nvflare.client.self_check`) and the received accuracy is that point's.

        Returns:
            ``(θ_i as numpy, metrics, meta)``: the FULL federated tensors after training, the metrics
            (accuracy of the received model, train loss, examples, throughput, and in round 0 the
            accuracy after local training), and site info (task, split sizes).
        """
        self.trainer.set_federated(params)
        check = self._check(params)
        if self.trainer.settings.partner_check == "control":
            save_received(params, self.state_dir)
        subset = self.trainer.eval_subset(self.trainer.settings.round_eval_examples)
        metrics: Dict[str, float] = {K.ACCURACY_RECEIVED: self.trainer.evaluate(subset), **check}
        metrics.update({f"{name}_received": v for name, v in self.trainer.extra_metrics().items()})
        metrics.update(self.trainer.train(round_index=current_round))
        if current_round == 0:
            metrics[K.ACCURACY_LOCAL] = self.trainer.evaluate(subset)
            metrics.update({f"{name}_local": v for name, v in self.trainer.extra_metrics().items()})
        self.trainer.save_head(self.head_path)
        if self.trainer.holdout or self.trainer.settings.partner_check is not None:
            save_own(self.trainer, self.state_dir)
        self._record(current_round, metrics)
        if self.snapshots is not None and self.run_key is not None:
            try:
                self.snapshots.save(self.state_dir, self.run_key, current_round)
            except OSError as e:  # the round's result still goes back; only a later resume is worse off
                logger.error(
                    "%s: could not snapshot its private state after round %d in %s (%s): a resumed run would "
                    "restore an older snapshot",
                    self.site_name,
                    current_round,
                    self.snapshots.folder(self.run_key),
                    e,
                )
        logger.info(
            "%s round %d: received acc %.4f, train loss %.4f, %.1f examples/s",
            self.site_name,
            current_round,
            metrics[K.ACCURACY_RECEIVED],
            metrics[K.TRAIN_LOSS],
            metrics[K.EXAMPLES_PER_S],
        )
        return to_numpy(self.trainer.get_federated()), metrics, self._info()

    def _check(self, params: Mapping[str, Any]) -> Dict[str, float]:
        """The site's check of the received ``params`` (loaded), by its settings; the chosen start stays loaded."""
        if self.trainer.settings.partner_check is not None:
            return check_partners(self.trainer, params, self.state_dir)
        return choose_start(self.trainer, params, self.state_dir)

    def _history(self) -> List[Dict[str, float]]:
        if not os.path.exists(self.history_path):
            return []
        with open(self.history_path) as f:
            return json.load(f)

    def _record(self, current_round: int, metrics: Mapping[str, float]) -> None:
        """Appends the round's metrics to the site's own record (the process may not live to the next task)."""
        history = [h for h in self._history() if h["round"] != current_round]
        history.append({"round": current_round, **{k: float(v) for k, v in metrics.items()}})
        tmp = self.history_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(history, f)
        os.replace(tmp, self.history_path)

    def validate(self, params: Mapping[str, Any]) -> Tuple[Dict[str, float], Dict[str, Any]]:
        """Evaluates and saves the final personalized model.

        Returns:
            ``(metrics, meta)``: the accuracy (the modality's primary metric) and its further metrics, and where the
            peft adapter (+ head) was saved.
        """
        self.trainer.set_federated(params)
        check = self._check(params)
        accuracy = self.trainer.evaluate()
        extra = {**self.trainer.extra_metrics(), **check}
        adapter_dir = self.trainer.save_personalized(os.path.join(self.state_dir, K.ADAPTER_FOLDER))
        meta = self._info()
        meta[K.ADAPTER_DIR] = os.path.abspath(adapter_dir)
        history = self._history()
        meta["history"] = history
        first = [h for h in history if h["round"] == 0 and K.ACCURACY_LOCAL in h]
        if first:
            meta["accuracy_before"] = first[-1][K.ACCURACY_LOCAL]
        logger.info("%s: personalized model accuracy %.4f, adapter saved to %s", self.site_name, accuracy, adapter_dir)
        return {K.ACCURACY: accuracy, **extra}, meta
