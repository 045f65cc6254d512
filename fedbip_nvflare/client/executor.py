"""FedBipExecutor: NVFlare in-process executor that serves FedBip's train and validate tasks."""

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

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
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.modalities import DEFAULT_MODALITY, default_targets, get_modality
from fedbip_nvflare.models import LoraSettings
from fedbip_nvflare.tracking import track_scalars


class FedBipExecutor(Executor):
    """Fine-tunes the site's LoRA adapter and private head for FedBip tasks, in the client process.

    A site admin can put ``fedbip_site.json`` in the site's ``local/`` folder (see :func:`apply_site_config`): its
    data and resources then override the job's, so data paths stay with the site, not the job author.

    The site's data and model are loaded once, at START_RUN, and kept for the whole run, so a misconfigured site
    (unknown data keys, a missing data file or model folder, LoRA targets that match nothing) logs a clear error
    before any task and answers every task with ``EXECUTION_EXCEPTION`` (the server logs the site and goes on with
    the others). The private head is
    saved to ``<run dir>/fedbip/head.safetensors`` after every round and never leaves the site. Each round's
    metrics go to NVFlare's experiment tracking (analytics events, step = round; a job with tracking
    forwards them to the server's receiver).

    Args:
        model: HF model id or local folder (the same on every site and on the server).
        data: The site's data configuration (see ``fedbip_nvflare.client.site.load_task_data``).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (None: the modality's default).
        local_epochs: Local epochs per round.
        batch_size: Training batch size.
        learning_rate: LoRA learning rate.
        head_learning_rate: Head learning rate.
        weight_decay: AdamW weight decay.
        max_length: Token truncation length.
        num_threads: torch CPU threads (None: torch default).
        seed: Seed (head init, shuffling); LoRA init comes from the server's θ̄⁰.
        train_lora: False trains only the head on the frozen backbone (the "probe" baseline).
        federate_head: Send the head with the LoRA tensors (all sites must share one label space).
        round_eval_examples: Test examples for the per-round evaluations (None: all; see ``TrainSettings``).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (forward passes under autocast; see ``TrainSettings``).
        gradient_accumulation_steps: Batches per optimizer step.
        gradient_checkpointing: Recompute activations in the backward pass (less memory).
        max_new_tokens: Generation length of a causal LM's evaluation.
        modality: What the site trains: "text" (classifier), "vision" (image classifier), "causal-lm" (a key of
            ``fedbip_nvflare.modalities.MODALITIES``).
        train_task_name: Name of the train task.
        validate_task_name: Name of the validate task.
    """

    def __init__(
        self,
        model: str,
        data: Optional[Dict[str, Any]] = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: Optional[Sequence[str]] = None,
        local_epochs: int = 1,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        head_learning_rate: float = 5e-3,
        weight_decay: float = 0.0,
        max_length: int = 128,
        num_threads: Optional[int] = None,
        seed: int = 0,
        train_lora: bool = True,
        federate_head: bool = False,
        round_eval_examples: Optional[int] = None,
        precision: str = "fp32",
        gradient_accumulation_steps: int = 1,
        gradient_checkpointing: bool = False,
        max_new_tokens: int = 32,
        modality: str = DEFAULT_MODALITY,
        train_task_name: str = K.TRAIN_TASK,
        validate_task_name: str = K.VALIDATE_TASK,
    ):
        super().__init__()
        get_modality(modality)
        self.modality = modality
        self.model = model
        self.data = data if data is not None else {"suite": "text-tasks"}
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = list(target_modules if target_modules is not None else default_targets(modality))
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.max_length = max_length
        self.num_threads = num_threads
        self.seed = seed
        self.train_lora = train_lora
        self.federate_head = federate_head
        self.round_eval_examples = round_eval_examples
        self.precision = precision
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.gradient_checkpointing = gradient_checkpointing
        self.max_new_tokens = max_new_tokens
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        if not isinstance(self.data, dict):
            raise ValueError(f"data must be a dict data configuration, got {type(self.data).__name__}")
        self._lora = LoraSettings(lora_r, lora_alpha, lora_dropout, tuple(self.target_modules))
        self._settings = TrainSettings(
            local_epochs=local_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            head_learning_rate=head_learning_rate,
            weight_decay=weight_decay,
            max_length=max_length,
            num_threads=num_threads,
            seed=seed,
            train_lora=train_lora,
            federate_head=federate_head,
            round_eval_examples=round_eval_examples,
            precision=precision,
            gradient_accumulation_steps=gradient_accumulation_steps,
            gradient_checkpointing=gradient_checkpointing,
            max_new_tokens=max_new_tokens,
        )
        self._session: Optional[SiteSession] = None
        self._state_dir: Optional[str] = None
        self._start_error: Optional[str] = None

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
            self._state_dir = os.path.join(run_dir, K.STATE_DIR)
            try:
                self._get_session(fl_ctx)
            except Exception as e:
                self._start_error = f"{type(e).__name__}: {e}"
                self.log_error(fl_ctx, f"site set-up failed, this site will not train: {self._start_error}")

    def _get_session(self, fl_ctx: FLContext) -> SiteSession:
        if self._session is None:
            site = fl_ctx.get_identity_name()
            local_dir = fl_ctx.get_engine().get_workspace().get_site_config_dir()
            data, settings, source = apply_site_config(local_dir, self.data, self._settings)
            if source:
                self.log_info(fl_ctx, f"site configuration from {source} overrides the job's data/resources")
            self.log_info(fl_ctx, f"loading model {self.model} and data {data} for {site}")
            self._session = SiteSession(
                site, self._state_dir, self.model, data, self._lora, settings, modality=self.modality
            )
        return self._session

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name not in (self.train_task_name, self.validate_task_name):
            self.log_error(fl_ctx, f"unknown task {task_name!r}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        if self._start_error is not None:
            self.log_error(fl_ctx, f"{task_name} refused: site set-up failed at START_RUN: {self._start_error}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        try:
            received = FLModelUtils.from_shareable(shareable)
            session = self._get_session(fl_ctx)
            if abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            if task_name == self.train_task_name:
                rnd = int(received.current_round or 0)
                params, metrics, meta = session.train(received.params, rnd)
                track_scalars(self, fl_ctx, metrics, rnd)
                meta[FLMetaKey.NUM_STEPS_CURRENT_ROUND] = int(metrics[K.N_EXAMPLES])
                result = FLModel(params=params, params_type=ParamsType.FULL, metrics=metrics, meta=meta)
            else:
                metrics, meta = session.validate(received.params)
                track_scalars(
                    self, fl_ctx, {"final_" + k: v for k, v in metrics.items()}, int(received.current_round or 0)
                )
                result = FLModel(metrics=metrics, meta=meta)
            result.current_round = received.current_round
            return FLModelUtils.to_shareable(result)
        except Exception as e:
            self.log_exception(fl_ctx, f"{task_name} failed: {e}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)


SITE_CONFIG_FILE = "fedbip_site.json"
SITE_CONFIG_KEYS = ("data", "num_threads", "batch_size", "local_epochs")


def apply_site_config(
    local_dir: str, data: Dict[str, Any], settings: TrainSettings
) -> Tuple[Dict[str, Any], TrainSettings, Optional[str]]:
    """The job's data and settings, overridden by the site's ``<local_dir>/fedbip_site.json`` if it exists.

    The file is a JSON object with any of ``data`` (the site's data configuration, e.g.
    ``{"train_path": "/data/train.csv", "test_path": "/data/test.csv"}``; it replaces the job's), ``num_threads``,
    ``batch_size`` and ``local_epochs``.

    Returns:
        ``(data, settings, path of the file or None)``.

    Raises:
        ValueError: The file is not valid JSON, or has unknown keys or bad values (naming them).
    """
    path = os.path.join(local_dir, SITE_CONFIG_FILE)
    if not os.path.exists(path):
        return data, settings, None
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object with keys among {list(SITE_CONFIG_KEYS)}")
    unknown = sorted(set(config) - set(SITE_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{path} has unknown keys {unknown}; allowed: {list(SITE_CONFIG_KEYS)}")
    site_data = config.get("data", data)
    if not isinstance(site_data, dict):
        raise ValueError(f"{path}: 'data' must be a data configuration object, got {site_data!r}")
    overrides = {k: config[k] for k in SITE_CONFIG_KEYS if k != "data" and k in config}
    return dict(site_data), dataclasses.replace(settings, **overrides), path
