"""Model builders: HF text classifier with LoRA, LoRA settings and the initial adapter."""

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

__all__ = [
    "DEFAULT_TEXT_TARGETS",
    "HEAD_PREFIX",
    "LoraSettings",
    "TextClassifier",
    "adapter_shapes",
    "build_text_classifier",
    "initial_adapter",
    "initial_head",
    "is_head",
    "resolve_model_path",
]
