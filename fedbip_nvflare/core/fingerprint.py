"""Fingerprints of parameter sets, to compare models across processes without shipping them."""

import hashlib
from typing import Mapping

import numpy as np
import torch


def params_digest(params: Mapping[str, object]) -> str:
    """SHA-256 of a parameter set: its sorted names, shapes and float32 values.

    Numpy arrays and torch tensors with the same float32 values give the same digest, so a model recorded on
    a site can be matched against the server's copy.

    Args:
        params: ``{name: tensor or array}``.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(params):
        value = params[name]
        array = value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        array = np.ascontiguousarray(array, dtype="<f4")
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
