"""Image classifier: a pre-trained image backbone with LoRA, pooled features and a client-private linear head.

Backbones:

* MobileNetV2 with torchvision's ImageNet weights (``"torchvision/mobilenet_v2"``, the offline copy fetched by
  ``python -m fedbip_nvflare.assets fetch``; or a ``.pth`` checkpoint / a folder holding one). LoRA adapts its 1×1
  convolutions by default (:func:`~fedbip_nvflare.models.mobilenet_v2.pointwise_conv_names`); BatchNorm statistics
  stay frozen.
* Any HF image model (id or folder with ``config.json``) that ``AutoModel`` loads, e.g. a ViT: its base model's last
  hidden state is mean-pooled (over tokens, or over the spatial grid of a CNN), normalised with its image
  processor's mean/std (ImageNet's if it has none). LoRA adapts the attention's query and value projections by default
  (ViT-style: ``q_proj``/``v_proj`` in transformers 5, ``query``/``value`` in 4).
"""

import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from fedbip_nvflare.models.lora import LoraSettings, PrivateHeadMixin, initial_head, with_lora
from fedbip_nvflare.models.mobilenet_v2 import (
    FEATURE_SIZE,
    MobileNetV2,
    checkpoint_file,
    load_mobilenet_v2,
    pointwise_conv_names,
)
from fedbip_nvflare.models.pixels import IMAGENET_MEAN, IMAGENET_STD
from fedbip_nvflare.models.resolve import resolve_model_path

logger = logging.getLogger(__name__)

DEFAULT_VISION_MODEL = "torchvision/mobilenet_v2"
# MobileNetV2's pointwise convolutions (full names) and ViT attention's query/value projections (``q_proj``/``v_proj``
# in transformers 5, ``query``/``value`` before): each backbone matches its own.
DEFAULT_VISION_TARGETS: Tuple[str, ...] = pointwise_conv_names() + ("query", "value", "q_proj", "v_proj")
_MOBILENET_IDS = ("torchvision/mobilenet_v2", "mobilenet_v2")


@dataclass(frozen=True)
class ImageInput:
    """What a backbone expects of its input images.

    Attributes:
        mean: Per-channel mean of the normalisation (RGB, on [0, 1] pixels).
        std: Per-channel standard deviation.
        image_size: Side the model needs (HF models with a fixed ``config.image_size``), or None for any size.
    """

    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    image_size: Optional[int] = None


def _locate(model_name_or_path: str) -> str:
    """A local checkpoint file or folder for a model id/path (HF ids other than the offline ones pass through)."""
    if isinstance(model_name_or_path, str) and os.path.isfile(model_name_or_path):
        return model_name_or_path
    path = resolve_model_path(model_name_or_path)
    if path in _MOBILENET_IDS:  # known id, but the offline copy is missing
        from fedbip_nvflare.assets import FETCH_HINT

        raise FileNotFoundError(f"the offline MobileNetV2 checkpoint ({model_name_or_path!r}) is missing; {FETCH_HINT}")
    return path


def _mobilenet_file(path: str) -> Optional[str]:
    """The MobileNetV2 checkpoint at ``path``, or None for an HF model (a folder with ``config.json``, or an id)."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        return None
    return checkpoint_file(path)


def _checkpoint_classes(file: str) -> int:
    state = torch.load(file, map_location="cpu", weights_only=True)
    return int(state["classifier.1.weight"].shape[0]) if "classifier.1.weight" in state else 1000


def _hf_feature_size(config) -> int:
    sizes = getattr(config, "hidden_sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes:  # CNNs (ResNet, ConvNeXt): channels of the last stage
        return int(sizes[-1])
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise ValueError(
            f"cannot tell the feature size of a {type(config).__name__} model (no hidden_size or hidden_sizes); "
            "use MobileNetV2 or a ViT-style/CNN image model"
        )
    return int(size)


def vision_backbone(model_path: str) -> Tuple[nn.Module, int]:
    """The bare module LoRA wraps, built from the configuration alone, and the head's feature size.

    Call it under ``torch.device("meta")`` for θ̄⁰'s names and shapes: MobileNetV2 is built from its architecture
    (the checkpoint is read only for its classifier's size), an HF model from ``config.json``.
    """
    path = _locate(model_path)
    file = _mobilenet_file(path)
    if file is not None:
        return MobileNetV2(num_classes=_checkpoint_classes(file)), FEATURE_SIZE
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path)
    return AutoModel.from_config(config), _hf_feature_size(config)


def load_vision_backbone(model_name_or_path: str) -> Tuple[nn.Module, ImageInput]:
    """The pre-trained backbone (weights loaded, no LoRA) and what it expects of its input.

    ``PeftModel.from_pretrained(load_vision_backbone(base)[0], adapter_dir)`` loads a personalized adapter.
    """
    path = _locate(model_name_or_path)
    file = _mobilenet_file(path)
    if file is not None:
        return load_mobilenet_v2(file), ImageInput()
    from transformers import AutoImageProcessor, AutoModel

    backbone = AutoModel.from_pretrained(path)
    image_input = ImageInput()
    try:
        processor = AutoImageProcessor.from_pretrained(path)
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if mean is not None and std is not None:
            image_input = ImageInput(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    except (OSError, ValueError):
        logger.info("%s has no image processor: normalising with ImageNet's mean and std", model_name_or_path)
    size = getattr(backbone.config, "image_size", None)
    if isinstance(size, int):
        image_input = ImageInput(image_input.mean, image_input.std, size)
    return backbone, image_input


def backbone_feature_size(backbone: nn.Module) -> int:
    """Size of the pooled features of a backbone from :func:`load_vision_backbone`."""
    return FEATURE_SIZE if isinstance(backbone, MobileNetV2) else _hf_feature_size(backbone.config)


class ImageClassifier(PrivateHeadMixin, nn.Module):
    """Backbone (wrapped by peft) → pooled features → linear head.

    BatchNorm layers of the backbone stay in eval mode in training (their statistics are part of the frozen
    pre-trained model, not of what is federated).

    Args:
        backbone: A ``peft.PeftModel`` around MobileNetV2 or an HF ``AutoModel`` image model.
        feature_size: Size of the pooled features.
        num_labels: Number of classes of this client's task.
    """

    def __init__(self, backbone: nn.Module, feature_size: int, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_size, num_labels)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[batch, feature_size]`` of normalised images ``[batch, 3, H, W]``."""
        base = self.backbone.get_base_model()  # LoRA layers are injected into it
        if isinstance(base, MobileNetV2):
            return base.forward_features(pixel_values)
        hidden = base(pixel_values=pixel_values).last_hidden_state
        return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Returns logits ``[batch, num_labels]``."""
        return self.head(self.features(pixel_values))

    def train(self, mode: bool = True) -> "ImageClassifier":
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def build_image_classifier(
    model_name_or_path: str, num_labels: int, lora: LoraSettings, seed: int = 0
) -> Tuple[ImageClassifier, ImageInput]:
    """Loads the pre-trained backbone, adds LoRA and a fresh head (``initial_head`` for the seed).

    Args:
        model_name_or_path: ``"torchvision/mobilenet_v2"`` (offline copy), a MobileNetV2 ``.pth`` file or folder,
            or an HF image model id/folder.
        num_labels: Number of classes (>= 2).
        lora: LoRA settings.
        seed: Seed for the head's (and LoRA's) initialisation.

    Returns:
        ``(model, image_input)``; only LoRA and head parameters require grad.

    Raises:
        ValueError: Fewer than 2 labels, or LoRA targets that match no module of the backbone.
        FileNotFoundError: The model does not exist (or the offline copy was not fetched).
    """
    if num_labels < 2:
        raise ValueError(f"a classification task needs at least 2 labels, got {num_labels}")
    torch.manual_seed(seed)
    backbone, image_input = load_vision_backbone(model_name_or_path)
    feature_size = backbone_feature_size(backbone)
    peft_backbone = with_lora(backbone, lora, model_name_or_path)
    model = ImageClassifier(peft_backbone, feature_size, num_labels)
    model.load_head_state(initial_head(num_labels, feature_size, seed))
    return model, image_input


def image_input_dict(image_input: ImageInput, image_size: int) -> Dict[str, Sequence[float]]:
    """The preprocessing a user repeats for inference (saved beside a personalized adapter)."""
    return {"image_size": image_input.image_size or image_size, "mean": image_input.mean, "std": image_input.std}
