"""Task vectors: the difference between a client's fine-tuned and its received federated parameters."""

import math
import statistics
from typing import Dict, Mapping, Optional, Tuple

import torch

Params = Dict[str, torch.Tensor]


def task_vector(theta: Mapping[str, torch.Tensor], theta_bar: Mapping[str, torch.Tensor]) -> Params:
    """Computes τ = θ − θ̄ in fp32, tensor by tensor.

    Args:
        theta: Parameters after local fine-tuning.
        theta_bar: Parameters the client received (same names and shapes).

    Returns:
        ``{name: θ[name] − θ̄[name]}`` as fp32 tensors, in ``theta_bar``'s name order.
    """
    return {n: theta[n].detach().float() - theta_bar[n].detach().float() for n in theta_bar}


def apply_update(theta_bar: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor]) -> Params:
    """Returns θ̄ + update, keeping θ̄'s dtypes."""
    return {n: (t.float() + update[n].float()).to(t.dtype) for n, t in theta_bar.items()}


def check_update(
    params: Mapping[str, object],
    reference: Mapping[str, torch.Tensor],
    max_abs: Optional[float] = None,
) -> Optional[str]:
    """Checks a client's returned parameters against what it was sent.

    Args:
        params: The returned parameters (tensors or array-likes).
        reference: The parameters the client was sent.
        max_abs: Optional bound on any absolute value.

    Returns:
        None when the update is usable, else a short reason naming the offending tensors.
    """
    missing = [n for n in reference if n not in params]
    extra = [n for n in params if n not in reference]
    if missing:
        return f"missing tensors {missing[:3]}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
    if extra:
        return f"unexpected tensors {extra[:3]}" + (f" (+{len(extra) - 3} more)" if len(extra) > 3 else "")
    for name, ref in reference.items():
        value = params[name]
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                return f"tensor {name} is not numeric (got {type(value).__name__})"
        if not (value.is_floating_point()):
            return f"tensor {name} has non-floating dtype {value.dtype}"
        if tuple(value.shape) != tuple(ref.shape):
            return f"tensor {name} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if not bool(torch.isfinite(value).all()):
            return f"tensor {name} has non-finite values (NaN/Inf)"
        if max_abs is not None and value.numel() and float(value.abs().max()) > max_abs:
            return f"tensor {name} exceeds the absolute bound {max_abs:g}"
    return None


def l2_norm(vector: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of a dict of tensors, accumulated in fp32."""
    return math.sqrt(sum(float(torch.sum(t.float() * t.float())) for t in vector.values()))


def clip_to_median_norm(vectors: Mapping[str, Mapping[str, torch.Tensor]], bound: float) -> Tuple[Dict, Dict]:
    """Scales down every task vector longer than ``bound`` × the median norm of the round (a norm bound).

    A defence against one client pulling everyone's models with an outsized update; cosines (and so FedBip's
    weights) are unchanged, only the clipped vectors' lengths.

    Args:
        vectors: ``{client: τ}``.
        bound: Multiple of the median L2 norm a vector may reach (> 0).

    Returns:
        ``({client: τ, scaled where needed}, {client: scale})`` with the scale (< 1) of each clipped client.

    Raises:
        ValueError: ``bound`` is not a positive number.
    """
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"the norm bound must be a number > 0 (a multiple of the median norm), got {bound!r}")
    norms = {c: l2_norm(v) for c, v in vectors.items()}
    limit = bound * statistics.median(norms.values()) if norms else 0.0
    out, scales = {}, {}
    for client, vector in vectors.items():
        if limit > 0 and norms[client] > limit:
            scales[client] = limit / norms[client]
            out[client] = {n: t * scales[client] for n, t in vector.items()}
        else:
            out[client] = dict(vector)
    return out, scales
