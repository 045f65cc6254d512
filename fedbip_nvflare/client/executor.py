"""FedBipExecutor: NVFlare in-process executor that serves FedBip's train and validate tasks."""

import os
from typing import Any, Dict, Optional, Sequence

from nvflare.apis.event_type import EventType
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import FLMetaKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.client.site import SiteSession
from fedbip_nvflare.client.site_config import apply_site_config
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.models import LoraSettings
from fedbip_nvflare.models.backbones import DEFAULT_MODALITY, default_targets, get_backbone
from fedbip_nvflare.tracking import track_scalars


class FedBipExecutor(Executor):
    """Fine-tunes the site's LoRA adapter and private head for FedBip tasks, in the client process.

    A site admin can put ``fedbip_site.json`` in the site's ``local/`` folder (see
    :func:`~fedbip_nvflare.client.site_config.apply_site_config`): its data and resources then override the job's,
    so data paths stay with the site, not the job author.

    The site's data and model are loaded once, at START_RUN, and kept for the whole run, so a misconfigured site
    (unknown data keys, a missing data file or model folder, LoRA targets that match nothing) logs a clear error
    before any task and answers every task with ``EXECUTION_EXCEPTION`` (the server logs the site and goes on with
    the others). The private head is
    saved to ``<run dir>/fedbip/head.safetensors`` after every round and never leaves the site. After every train task
    the site's private state (head, round record, own model) is also snapshotted under the task's run key in
    ``site_state_root``, outside the job, and a job that resumes the run (``resume_from``) restores it before its
    first task (:mod:`fedbip_nvflare.client.site_state`). Each round's
    metrics go to NVFlare's experiment tracking (analytics events, step = round; a job with tracking
    forwards them to the server's receiver).

    Args:
        model: HF model id or local folder (the same on every site and on the server).
        data: The site's data configuration (see ``fedbip_nvflare.client.site.load_task_data``).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (None: the modality's default).
        settings: How the site fine-tunes (epochs, batch size, learning rates, precision, ...): one
            :class:`~fedbip_nvflare.client.settings.TrainSettings`, validated when built (None: its defaults).
        modality: What the site trains: "text" (classifier), "vision" (image classifier), "causal-lm" (a key of
            ``fedbip_nvflare.modalities.MODALITIES``).
        train_task_name: Name of the train task.
        validate_task_name: Name of the validate task.
        site_state_root: Folder where the site keeps snapshots of its private state across jobs (None:
            ``<site workspace>/fedbip_state``). NVFlare's simulator deletes its workspace when a job starts, so a
            simulated run that is to be resumed needs a folder outside it.

    Raises:
        ValueError: An unknown modality, a data configuration that is not a dict, bad LoRA settings,
            ``settings`` that is not a TrainSettings or a ``site_state_root`` that is not a non-empty string.
    """

    def __init__(
        self,
        model: str,
        data: Optional[Dict[str, Any]] = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: Optional[Sequence[str]] = None,
        settings: Optional[TrainSettings] = None,
        modality: str = DEFAULT_MODALITY,
        train_task_name: str = K.TRAIN_TASK,
        validate_task_name: str = K.VALIDATE_TASK,
        site_state_root: Optional[str] = None,
    ):
        super().__init__()
        get_backbone(modality)
        self.modality = modality
        self.model = model
        self.data = data if data is not None else {"suite": "text-tasks"}
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = list(target_modules if target_modules is not None else default_targets(modality))
        self.settings = settings if settings is not None else TrainSettings()
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self.site_state_root = site_state_root
        if site_state_root is not None and (not isinstance(site_state_root, str) or not site_state_root):
            raise ValueError(f"site_state_root must be a folder path or None, got {site_state_root!r}")
        if not isinstance(self.data, dict):
            raise ValueError(f"data must be a dict data configuration, got {type(self.data).__name__}")
        if not isinstance(self.settings, TrainSettings):
            raise ValueError(f"settings must be a TrainSettings, got {type(self.settings).__name__}")
        self._lora = LoraSettings(lora_r, lora_alpha, lora_dropout, tuple(self.target_modules))
        self._session: Optional[SiteSession] = None
        self._state_dir: Optional[str] = None
        self._snapshot_root: Optional[str] = None
        self._start_error: Optional[str] = None

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            workspace = fl_ctx.get_engine().get_workspace()
            self._state_dir = os.path.join(workspace.get_run_dir(fl_ctx.get_job_id()), K.STATE_DIR)
            self._snapshot_root = self.site_state_root or os.path.join(workspace.get_root_dir(), K.SITE_STATE_DIR)
            try:
                self._get_session(fl_ctx)
            except Exception as e:
                self._start_error = f"{type(e).__name__}: {e}"
                self.log_error(fl_ctx, f"site set-up failed, this site will not train: {self._start_error}")

    def _get_session(self, fl_ctx: FLContext) -> SiteSession:
        if self._session is None:
            site = fl_ctx.get_identity_name()
            local_dir = fl_ctx.get_engine().get_workspace().get_site_config_dir()
            data, settings, source = apply_site_config(local_dir, self.data, self.settings)
            if source:
                self.log_info(fl_ctx, f"site configuration from {source} overrides the job's data/resources")
            self.log_info(fl_ctx, f"loading model {self.model} and data {data} for {site}")
            self._session = SiteSession(
                site,
                self._state_dir,
                self.model,
                data,
                self._lora,
                settings,
                modality=self.modality,
                snapshot_root=self._snapshot_root,
            )
        return self._session

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name not in (self.train_task_name, self.validate_task_name):
            self.log_error(fl_ctx, f"unknown task {task_name!r}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        if self._start_error is not None:
            self.log_error(fl_ctx, f"{task_name} refused: site set-up failed at START_RUN: {self._start_error}")
            return _failed(f"site set-up failed: {self._start_error}")
        try:
            received = FLModelUtils.from_shareable(shareable)
            session = self._get_session(fl_ctx)
            if abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            rnd = int(received.current_round or 0)
            session.begin_task((received.meta or {}).get(K.RUN_KEY), rnd)
            if task_name == self.train_task_name:
                params, metrics, meta = session.train(received.params, rnd)
                track_scalars(self, fl_ctx, metrics, rnd)
                meta[FLMetaKey.NUM_STEPS_CURRENT_ROUND] = int(metrics[K.N_EXAMPLES])
                result = FLModel(params=params, params_type=ParamsType.FULL, metrics=metrics, meta=meta)
            else:
                metrics, meta = session.validate(received.params)
                track_scalars(self, fl_ctx, {"final_" + k: v for k, v in metrics.items()}, rnd)
                result = FLModel(metrics=metrics, meta=meta)
            result.current_round = received.current_round
            return FLModelUtils.to_shareable(result)
        except Exception as e:
            self.log_exception(fl_ctx, f"{task_name} failed: {e}")
            return _failed(f"{task_name} failed: {type(e).__name__}: {e}")


def _failed(reason: str) -> Shareable:
    """An EXECUTION_EXCEPTION reply carrying the site's one-line reason for the server's results."""
    reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
    reply.set_header(K.SITE_ERROR, reason.splitlines()[0] if reason else reason)
    return reply
