"""MobileNetV2 in plain PyTorch, with torchvision's module names and state-dict keys.

torchvision does not import beside the torch build this project runs on, so the architecture is written out here
(Sandler et al. 2018, torchvision's ``mobilenet_v2`` with width 1.0). The module tree is torchvision's, so its
ImageNet checkpoint ``mobilenet_v2-b0353104.pth`` loads with ``strict=True``::

    features.0            Conv2dNormActivation(3, 32, stride 2): .0 conv, .1 BatchNorm, .2 ReLU6
    features.1            InvertedResidual, expand ratio 1: conv.0 depthwise (.0 conv, .1 BN), conv.1 1x1, conv.2 BN
    features.2 .. 17      InvertedResidual: conv.0 1x1 expand (.0, .1), conv.1 depthwise (.0, .1), conv.2 1x1, conv.3 BN
    features.18           Conv2dNormActivation(320, 1280, 1x1)
    classifier.1          Linear(1280, 1000) after Dropout(0.2)
"""

import os
from typing import List, Optional, Tuple

import torch
from torch import nn

FEATURE_SIZE = 1280
CHECKPOINT_FILE = "mobilenet_v2-b0353104.pth"
# (expand ratio t, output channels c, repeats n, first stride s) of the inverted-residual stages.
_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class Conv2dNormActivation(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → ReLU6, with "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1×1 expansion (unless ``expand_ratio`` is 1) → 3×3 depthwise → 1×1 projection (+ the input if shapes allow)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, kernel_size=1))
        layers += [
            Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's layout.

    Args:
        num_classes: Outputs of the classifier (1000 for the ImageNet checkpoint).
        dropout: Dropout before the classifier.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        channels = 32
        features: List[nn.Module] = [Conv2dNormActivation(3, channels, stride=2)]
        for t, c, n, s in _STAGES:
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        features.append(Conv2dNormActivation(channels, FEATURE_SIZE, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(FEATURE_SIZE, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation (only used without a checkpoint)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features ``[batch, 1280]`` of images ``[batch, 3, H, W]``."""
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, num_classes]``."""
        return self.classifier(self.forward_features(x))


def pointwise_conv_names() -> Tuple[str, ...]:
    """Full module names of MobileNetV2's 1×1 (pointwise) convolutions, in network order.

    Every inverted residual block's expansion (``features.K.conv.0.0``, blocks 2–17) and projection
    (``features.1.conv.1``, ``features.K.conv.2``), and the last 1×1 conv ``features.18.0``: 34 convolutions. Full
    names, because suffixes are ambiguous in torchvision's layout (``conv.2`` is a BatchNorm in block 1, ``conv.0.0``
    a depthwise conv there).
    """
    names = ["features.1.conv.1"]
    for block in range(2, 18):
        names += [f"features.{block}.conv.0.0", f"features.{block}.conv.2"]
    names.append("features.18.0")
    return tuple(names)


def checkpoint_file(path: str) -> Optional[str]:
    """The ``.pth`` file of a MobileNetV2 checkpoint path: the file itself, or ``CHECKPOINT_FILE`` (or the only
    ``.pth`` file) inside a folder; None if there is none."""
    if os.path.isfile(path):
        return path if path.endswith((".pth", ".pt")) else None
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, CHECKPOINT_FILE)):
        return os.path.join(path, CHECKPOINT_FILE)
    found = sorted(f for f in os.listdir(path) if f.endswith((".pth", ".pt")))
    return os.path.join(path, found[0]) if len(found) == 1 else None


def load_mobilenet_v2(path: str) -> MobileNetV2:
    """MobileNetV2 with the weights of a torchvision-layout checkpoint, loaded with ``strict=True``.

    Args:
        path: The ``.pth`` state dict (e.g. torchvision's ``mobilenet_v2-b0353104.pth``) or a folder holding it.

    Raises:
        FileNotFoundError: No checkpoint at ``path``.
        RuntimeError: The checkpoint's keys or shapes are not MobileNetV2's (torch's message lists them).
    """
    file = checkpoint_file(path)
    if file is None:
        raise FileNotFoundError(
            f"no MobileNetV2 checkpoint at {path!r}: pass torchvision's {CHECKPOINT_FILE} or a folder holding one "
            "(`python -m fedbip_nvflare.assets fetch` puts it in the offline cache)"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    num_classes = int(state["classifier.1.weight"].shape[0]) if "classifier.1.weight" in state else 1000
    model = MobileNetV2(num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    return model
