"""Model builders: HF text classifier with LoRA, LoRA settings and the initial adapter."""

from fedbip_nvflare.models.causal_lm import CausalLM, build_causal_lm, causal_lm_backbone, locate_causal_lm
from fedbip_nvflare.models.lora import (
    DEFAULT_TEXT_TARGETS,
    HEAD_PREFIX,
    LoraSettings,
    adapter_shapes,
    initial_adapter,
    initial_head,
    is_head,
)
from fedbip_nvflare.models.resolve import resolve_model_path
from fedbip_nvflare.models.text import TextClassifier, build_text_classifier
from fedbip_nvflare.models.vision import ImageClassifier, build_image_classifier, load_vision_backbone, vision_backbone

__all__ = [
    "CausalLM",
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
    "initial_adapter",
    "initial_head",
    "is_head",
    "load_vision_backbone",
    "locate_causal_lm",
    "resolve_model_path",
    "vision_backbone",
]
