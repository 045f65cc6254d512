"""Model builders: HF text classifier with LoRA, LoRA settings and the initial adapter."""

from fedbip_nvflare.models.lora import DEFAULT_TEXT_TARGETS, LoraSettings, adapter_shapes, initial_adapter
from fedbip_nvflare.models.resolve import resolve_model_path
from fedbip_nvflare.models.text import TextClassifier, build_text_classifier

__all__ = [
    "DEFAULT_TEXT_TARGETS",
    "LoraSettings",
    "TextClassifier",
    "adapter_shapes",
    "build_text_classifier",
    "initial_adapter",
    "resolve_model_path",
]
