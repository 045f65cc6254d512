"""LoRA settings, wrapping a module with LoRA (every model kind), and the classification head's initial tensors."""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import nn

DEFAULT_TEXT_TARGETS: Tuple[str, ...] = ("query", "value")
HEAD_PREFIX = "head."


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (peft's ``LoraConfig`` fields that FedBip jobs expose).

    Attributes:
        r: Rank.
        alpha: Scaling numerator (``lora_alpha``).
        dropout: Dropout on the LoRA input.
        target_modules: Module-name suffixes to adapt.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Tuple[str, ...] = field(default_factory=lambda: DEFAULT_TEXT_TARGETS)

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"lora r must be a positive int, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"lora alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(f"lora target_modules must be a non-empty list of names, got {self.target_modules!r}")
        self.target_modules = tuple(str(m) for m in self.target_modules)

    def peft_config(self):
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.target_modules)
        )


def with_lora(module: nn.Module, lora: LoraSettings, model_name_or_path: str, modality: Optional[str] = None):
    """``module`` wrapped by peft with LoRA (``peft.get_peft_model``): every model kind adds its adapter here.

    Args:
        module: The bare pre-trained module (its weights are frozen by peft).
        lora: LoRA settings.
        model_name_or_path: The model's id or path (named in errors).
        modality: The model's modality (named in errors when given).

    Returns:
        The ``peft.PeftModel``.

    Raises:
        ValueError: The LoRA target modules match no module of ``module`` (names the targets and the model).
    """
    from peft import get_peft_model

    try:
        return get_peft_model(module, lora.peft_config())
    except ValueError as e:
        where = f"{model_name_or_path!r}" + (f" ({modality})" if modality else "")
        raise ValueError(f"LoRA target modules {list(lora.target_modules)} do not match modules of {where}: {e}") from e


HEAD_SEED_OFFSET = 1_000_003


def initial_head(num_labels: int, hidden_size: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A fresh classification head, identical wherever it is built for the same (seed, labels, hidden size).

    Sites start their head from it and the server uses it as θ̄⁰ of a federated head, so a head that joins the
    federation later (heads federated per label space) has a known starting point. nn.Linear's default init,
    ``U(±1/√hidden)`` for weight and bias, from a generator of its own.

    Returns:
        ``{"head.weight": [num_labels, hidden_size], "head.bias": [num_labels]}`` in fp32.
    """
    generator = torch.Generator().manual_seed(int(seed) + HEAD_SEED_OFFSET)
    bound = 1.0 / math.sqrt(hidden_size)
    weight = (torch.rand((int(num_labels), int(hidden_size)), generator=generator) * 2 - 1) * bound
    bias = (torch.rand((int(num_labels),), generator=generator) * 2 - 1) * bound
    return {HEAD_PREFIX + "weight": weight, HEAD_PREFIX + "bias": bias}


class PrivateHeadMixin:
    """``head_state`` / ``load_head_state`` for a model whose classification head is the module ``self.head``."""

    head: nn.Module

    def head_state(self) -> Dict[str, torch.Tensor]:
        """The head's tensors, prefixed ``head.``."""
        return {HEAD_PREFIX + k: v.detach().clone() for k, v in self.head.state_dict().items()}

    def load_head_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Loads tensors saved by :meth:`head_state` (other names are ignored)."""
        self.head.load_state_dict({k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)})


def is_head(name: str) -> bool:
    """Whether a federated tensor name belongs to the classification head."""
    return name.startswith(HEAD_PREFIX)


def is_lora_a(name: str) -> bool:
    """Whether a federated tensor name is a LoRA A (down-projection) matrix, as peft names them."""
    return ".lora_A." in name
