"""The initial federated parameters θ̄⁰ every client starts from, and their names and shapes (from configuration)."""

import math
from typing import Dict, Optional, Sequence, Tuple

import torch

from fedbip_nvflare.models.backbones import DEFAULT_MODALITY, default_targets, get_backbone
from fedbip_nvflare.models.lora import HEAD_PREFIX, LoraSettings, initial_head, is_head, is_lora_a, with_lora
from fedbip_nvflare.models.resolve import resolve_model_path


def _init_lora_tensor(name: str, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    # Matches peft's default init: A ~ kaiming_uniform(a=√5) = U(±1/√fan_in), B = 0.
    if is_lora_a(name):
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
    modality: str = DEFAULT_MODALITY,
) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of the LoRA tensors peft creates on a model, from its configuration alone.

    The modality's bare backbone (:data:`fedbip_nvflare.models.backbones.BACKBONES`) is built on the meta device, so
    no base weights are loaded or allocated.

    Args:
        model_name_or_path: HF model id or local folder (only its configuration is read).
        lora: LoRA settings.
        head_labels: With a federated classification head, its number of labels (adds ``head.weight``
            ``[labels, features]`` and ``head.bias``).
        modality: The model's modality (a key of :data:`fedbip_nvflare.models.backbones.BACKBONES`).

    Returns:
        ``{name: shape}`` in peft's adapter state-dict order and naming, then the head's tensors.

    Raises:
        ValueError: The LoRA target modules match nothing in the model, or the modality has no head but
            ``head_labels`` is given.
    """
    from peft import get_peft_model_state_dict

    with torch.device("meta"):
        backbone, features = get_backbone(modality).build(model_name_or_path)
    peft_model = with_lora(backbone, lora, model_name_or_path, modality)
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
    modality: str = DEFAULT_MODALITY,
) -> Dict[str, torch.Tensor]:
    """The initial federated parameters θ̄⁰ every client starts from (deterministic for a seed).

    Args:
        model_name_or_path: HF model id or local folder.
        lora: LoRA settings.
        seed: Seed of the initialisation.
        head_labels: Number of labels of a federated head (None: the head is client-private).
        modality: The model's modality (a key of :data:`fedbip_nvflare.models.backbones.BACKBONES`).

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


class AdapterModule(torch.nn.Module):
    """θ̄⁰ as a torch module: its ``state_dict()`` is :func:`initial_adapter`'s tensors, under peft's names.

    For NVFlare's PyTorch persistor (``PTFileModelPersistor``, which a PyTorch ``FedAvgRecipe`` builds from
    ``model={"path": "fedbip_nvflare.models.AdapterModule", "args": {...}}``): the workflow then starts from
    the same seeded θ̄⁰ as FedBip and the sites' adapters, and exchanges torch tensors. Each dotted name is a
    chain of submodules ending in a buffer, so the module has no forward pass; it only carries the tensors.

    Args:
        model: HF model id or local folder (only its configuration is read).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (None: the modality's default).
        seed: Seed of θ̄⁰.
        num_labels: Labels of a federated head (None: heads stay private).
        modality: What the sites train (a key of :data:`fedbip_nvflare.models.backbones.BACKBONES`).
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
        self.model = model
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = list(target_modules if target_modules is not None else default_targets(modality))
        self.seed = seed
        self.num_labels = num_labels
        self.modality = modality
        lora = LoraSettings(lora_r, lora_alpha, lora_dropout, tuple(self.target_modules))
        for name, tensor in initial_adapter(resolve_model_path(model), lora, seed, num_labels, modality).items():
            *path, leaf = name.split(".")
            holder: torch.nn.Module = self
            for part in path:
                if part not in holder._modules:
                    holder.add_module(part, torch.nn.Module())
                holder = holder._modules[part]
            holder.register_buffer(leaf, tensor)
