"""Model builders: each modality's pre-trained backbone with LoRA and its head, LoRA settings, the initial adapter.

``lora`` (settings, :func:`with_lora`, the head's init) ← ``text`` / ``vision`` / ``causal_lm`` (the models) ←
``backbones`` (the registry of bare backbones per modality) ← ``adapter`` (θ̄⁰). ``batching`` and ``pixels`` turn
encoded data into a model's input; ``resolve`` finds a model's files.
"""

from fedbip_nvflare.models.adapter import AdapterModule, adapter_shapes, initial_adapter
from fedbip_nvflare.models.backbones import BACKBONES, DEFAULT_MODALITY, Backbone, default_targets, get_backbone
from fedbip_nvflare.models.causal_lm import CausalLM, build_causal_lm, causal_lm_backbone, locate_causal_lm
from fedbip_nvflare.models.lora import (
    DEFAULT_TEXT_TARGETS,
    HEAD_PREFIX,
    LoraSettings,
    initial_head,
    is_head,
    is_lora_a,
    with_lora,
)
from fedbip_nvflare.models.resolve import resolve_model_path
from fedbip_nvflare.models.text import TextClassifier, build_text_classifier
from fedbip_nvflare.models.vision import ImageClassifier, build_image_classifier, load_vision_backbone, vision_backbone

__all__ = [
    "AdapterModule",
    "BACKBONES",
    "Backbone",
    "CausalLM",
    "DEFAULT_MODALITY",
    "DEFAULT_TEXT_TARGETS",
    "HEAD_PREFIX",
    "ImageClassifier",
    "LoraSettings",
    "TextClassifier",
    "adapter_shapes",
    "build_causal_lm",
    "build_image_classifier",
    "build_text_classifier",
    "causal_lm_backbone",
    "default_targets",
    "get_backbone",
    "initial_adapter",
    "initial_head",
    "is_head",
    "is_lora_a",
    "load_vision_backbone",
    "locate_causal_lm",
    "resolve_model_path",
    "vision_backbone",
    "with_lora",
]
