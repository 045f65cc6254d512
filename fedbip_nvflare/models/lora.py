"""LoRA settings and the shared initial adapter θ̄⁰."""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

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


def _init_lora_tensor(name: str, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    # Matches peft's default init: A ~ kaiming_uniform(a=√5) = U(±1/√fan_in), B = 0.
    if ".lora_A." in name:
        bound = 1.0 / math.sqrt(shape[1])
        return (torch.rand(tuple(shape), generator=generator) * 2 - 1) * bound
    if ".lora_B." in name or ".lora_embedding_A" in name:
        return torch.zeros(tuple(shape))
    if ".lora_embedding_B" in name:
        return torch.randn(tuple(shape), generator=generator)
    raise ValueError(f"cannot initialise adapter tensor {name!r}: only LoRA A/B tensors are supported")


def adapter_shapes(
    model_name_or_path: str,
    lora: LoraSettings,
    head_labels: Optional[int] = None,
    modality: str = "text",
) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of the LoRA tensors peft creates on a model, from its configuration alone.

    The modality's bare backbone (:func:`fedbip_nvflare.modalities.build_backbone`) is built on the meta device, so
    no base weights are loaded or allocated.

    Args:
        model_name_or_path: HF model id or local folder (only its configuration is read).
        lora: LoRA settings.
        head_labels: With a federated classification head, its number of labels (adds ``head.weight``
            ``[labels, features]`` and ``head.bias``).
        modality: The model's modality (a key of ``fedbip_nvflare.modalities.MODALITIES``).

    Returns:
        ``{name: shape}`` in peft's adapter state-dict order and naming, then the head's tensors.

    Raises:
        ValueError: The LoRA target modules match nothing in the model, or the modality has no head but
            ``head_labels`` is given.
    """
    from peft import get_peft_model, get_peft_model_state_dict

    from fedbip_nvflare.modalities import build_backbone

    with torch.device("meta"):
        backbone, features = build_backbone(modality, model_name_or_path)
    try:
        peft_model = get_peft_model(backbone, lora.peft_config())
    except ValueError as e:
        raise ValueError(
            f"LoRA target modules {list(lora.target_modules)} do not match modules of {model_name_or_path!r} "
            f"({modality}): {e}"
        ) from e
    shapes = {n: tuple(t.shape) for n, t in get_peft_model_state_dict(peft_model).items()}
    if head_labels is not None:
        if features <= 0:
            raise ValueError(f"modality {modality!r} has no classification head to federate (head_labels given)")
        shapes[HEAD_PREFIX + "weight"] = (int(head_labels), int(features))
        shapes[HEAD_PREFIX + "bias"] = (int(head_labels),)
    return shapes


def initial_adapter(
    model_name_or_path: str,
    lora: LoraSettings,
    seed: int = 0,
    head_labels: Optional[int] = None,
    modality: str = "text",
) -> Dict[str, torch.Tensor]:
    """The initial federated parameters θ̄⁰ every client starts from (deterministic for a seed).

    Args:
        model_name_or_path: HF model id or local folder.
        lora: LoRA settings.
        seed: Seed of the initialisation.
        head_labels: Number of labels of a federated head (None: the head is client-private).
        modality: The model's modality (a key of ``fedbip_nvflare.modalities.MODALITIES``).

    Returns:
        ``{name: fp32 tensor}`` named as peft's ``get_peft_model_state_dict`` (plus ``head.*``).
    """
    generator = torch.Generator().manual_seed(int(seed))
    shapes = adapter_shapes(model_name_or_path, lora, head_labels, modality)
    theta0 = {n: _init_lora_tensor(n, s, generator) for n, s in shapes.items() if not is_head(n)}
    if head_labels is not None:
        labels, hidden = shapes[HEAD_PREFIX + "weight"]
        theta0.update(initial_head(labels, hidden, seed))
    return theta0
