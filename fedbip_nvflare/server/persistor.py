"""AdapterPersistor: the federated LoRA tensors as an NVFlare model persistor (for stock workflows)."""

import os
from typing import Optional, Sequence

from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor
from safetensors.numpy import load_file, save_file

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.models import LoraSettings, initial_adapter, resolve_model_path
from fedbip_nvflare.models.backbones import DEFAULT_MODALITY, default_targets, get_backbone

GLOBAL_FILE = "global_model.safetensors"


class AdapterPersistor(ModelPersistor):
    """Serves θ̄⁰ (the same seeded initial adapter FedBip uses) and saves the global adapter every round.

    Lets NVFlare's own workflows (``FedAvg``, ``ScatterAndGather``) run on FedBip's client executor:
    ``load_model`` returns the last saved global adapter of this run, else θ̄⁰.

    Args:
        model: HF model id or local folder (only its config is read).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (None: the modality's default).
        seed: Seed of θ̄⁰.
        num_labels: Labels of a federated head (None: heads stay private).
        modality: What the sites train (a key of ``fedbip_nvflare.modalities.MODALITIES``).
    """

    def __init__(
        self,
        model: str,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        target_modules: Optional[Sequence[str]] = None,
        seed: int = 0,
        num_labels: Optional[int] = None,
        modality: str = DEFAULT_MODALITY,
    ):
        super().__init__()
        get_backbone(modality)
        self.modality = modality
        self.model = model
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = list(target_modules if target_modules is not None else default_targets(modality))
        self.seed = seed
        self.num_labels = num_labels
        self._lora = LoraSettings(lora_r, lora_alpha, lora_dropout, tuple(self.target_modules))

    @staticmethod
    def _path(fl_ctx: FLContext) -> str:
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
        return os.path.join(run_dir, K.STATE_DIR, GLOBAL_FILE)

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        path = self._path(fl_ctx)
        if os.path.exists(path):
            weights = load_file(path)
        else:
            theta0 = initial_adapter(
                resolve_model_path(self.model), self._lora, self.seed, self.num_labels, self.modality
            )
            weights = {n: t.numpy() for n, t in theta0.items()}
        return make_model_learnable(weights=weights, meta_props={})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext):
        path = self._path(fl_ctx)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.safetensors"
        save_file({n: v.astype("float32") for n, v in model[ModelLearnableKey.WEIGHTS].items()}, tmp)
        os.replace(tmp, path)
