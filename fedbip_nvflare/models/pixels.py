"""The model's float input from uint8 images: ImageNet's mean and std, and :func:`normalize`."""

from typing import Sequence, Tuple

import numpy as np
import torch

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(
    images: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 ``[N, S, S, 3]`` images as the model's float32 input ``[N, 3, S, S]``: ``(x / 255 - mean) / std``."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean_t) / std_t
