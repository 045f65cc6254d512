"""The bare backbone of every modality, with its default LoRA targets and offline default model.

The model-side half of :data:`fedbip_nvflare.modalities.MODALITIES`: what the server needs (θ̄⁰'s names and
shapes, the default LoRA targets) without the site trainers. The keys are the modality names.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from torch import nn

from fedbip_nvflare.models.causal_lm import DEFAULT_CAUSAL_LM, DEFAULT_CAUSAL_LM_TARGETS, causal_lm_backbone
from fedbip_nvflare.models.lora import DEFAULT_TEXT_TARGETS
from fedbip_nvflare.models.text import text_backbone
from fedbip_nvflare.models.vision import DEFAULT_VISION_MODEL, DEFAULT_VISION_TARGETS, vision_backbone

DEFAULT_MODALITY = "text"

BackboneBuilder = Callable[[str], Tuple[nn.Module, int]]
"""``(model_path) -> (module, head feature size)``: the bare module LoRA wraps, built from the model's configuration
(called on torch's meta device to get θ̄⁰'s names and shapes on the server); feature size 0: no head."""


@dataclass(frozen=True)
class Backbone:
    """One modality's model side.

    Attributes:
        build: The bare backbone builder (see :data:`BackboneBuilder`).
        default_targets: LoRA target modules when the job names none.
        default_model: Model id of the offline default (used by jobs and benchmarks, never implied by the recipe).
    """

    build: BackboneBuilder
    default_targets: Tuple[str, ...]
    default_model: str


BACKBONES: Dict[str, Backbone] = {
    "text": Backbone(text_backbone, DEFAULT_TEXT_TARGETS, "sentence-transformers/all-MiniLM-L6-v2"),
    # MobileNetV2's 1x1 convolutions and ViT's query/value
    "vision": Backbone(vision_backbone, DEFAULT_VISION_TARGETS, DEFAULT_VISION_MODEL),
    "causal-lm": Backbone(causal_lm_backbone, DEFAULT_CAUSAL_LM_TARGETS, DEFAULT_CAUSAL_LM),
}


def get_backbone(modality: str) -> Backbone:
    """The model side of ``modality``.

    Raises:
        ValueError: Unknown modality (the message lists the known ones).
    """
    if modality not in BACKBONES:
        raise ValueError(f"unknown modality {modality!r}; valid modalities: {sorted(BACKBONES)}")
    return BACKBONES[modality]


def default_targets(modality: str) -> Tuple[str, ...]:
    """The LoRA target modules of ``modality`` when a job names none."""
    return get_backbone(modality).default_targets
