"""Text classifier: a pre-trained HF encoder with LoRA, mean pooling and a client-private linear head."""

from typing import List, Tuple

import torch
from torch import nn

from fedbip_nvflare.models.lora import LoraSettings, PrivateHeadMixin, initial_head, with_lora
from fedbip_nvflare.models.resolve import resolve_model_path


class TextClassifier(PrivateHeadMixin, nn.Module):
    """Encoder (wrapped by peft) → masked mean pooling → linear head.

    Args:
        backbone: A ``peft.PeftModel`` around an HF ``AutoModel``.
        num_labels: Number of classes of this client's task.
    """

    def __init__(self, backbone: nn.Module, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Returns logits ``[batch, num_labels]``."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)


def build_text_classifier(
    model_name_or_path: str, num_labels: int, lora: LoraSettings, seed: int = 0
) -> Tuple[TextClassifier, "object"]:
    """Loads the pre-trained encoder and tokenizer, adds LoRA and a fresh head (``initial_head`` for the seed).

    Args:
        model_name_or_path: HF model id or local folder (known ids resolve to offline copies).
        num_labels: Number of classes (>= 2).
        lora: LoRA settings.
        seed: Seed for the head's (and LoRA's) initialisation.

    Returns:
        ``(model, tokenizer)``; only LoRA and head parameters require grad.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # NVFlare interleaves many processes' logs: no progress bars

    if num_labels < 2:
        raise ValueError(f"a classification task needs at least 2 labels, got {num_labels}")
    path = resolve_model_path(model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    backbone = AutoModel.from_pretrained(path)
    peft_backbone = with_lora(backbone, lora, model_name_or_path)
    model = TextClassifier(peft_backbone, num_labels)
    model.load_head_state(initial_head(num_labels, model.head.in_features, seed))
    return model, tokenizer


def trainable_names(model: nn.Module) -> List[str]:
    """Names of the parameters that require grad."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def text_backbone(model_path: str) -> Tuple[nn.Module, int]:
    """The bare HF encoder LoRA wraps, built from ``config.json`` alone, and its hidden size (the head's input).

    Call it under ``torch.device("meta")`` to get names and shapes without allocating weights.
    """
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_path)
    return AutoModel.from_config(config), int(config.hidden_size)
