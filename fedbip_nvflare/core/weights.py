"""Aggregation weights from similarities: ``p_ik = S_ik / Σ_j S_ij`` with a negative-cosine policy."""

import logging
from typing import Dict, Union

import torch

NEGATIVE_POLICIES = ("clip", "keep")
ROW_SUM_EPS = 1e-6

logger = logging.getLogger(__name__)


def check_negative_policy(negative: str) -> str:
    """Validates a negative-cosine policy name and returns it."""
    if negative not in NEGATIVE_POLICIES:
        raise ValueError(f"negative must be one of {NEGATIVE_POLICIES}, got {negative!r}")
    return negative


def _weights(similarity: torch.Tensor, negative: str) -> torch.Tensor:
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square [N, N] matrix, got shape {tuple(similarity.shape)}")
    s = similarity.detach().float().clone()
    s.fill_diagonal_(1.0)
    if negative == "clip":
        s = s.clamp_min(0.0)
    sums = s.sum(dim=1, keepdim=True)
    degenerate = sums.squeeze(1) <= ROW_SUM_EPS
    if bool(degenerate.any()):
        rows = degenerate.nonzero().flatten().tolist()
        logger.warning(
            "similarity rows %s sum to <= %g under negative=%r: falling back to self-only", rows, ROW_SUM_EPS, negative
        )
        eye = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
        s[degenerate] = eye[degenerate]
        sums = s.sum(dim=1, keepdim=True)
    return s / sums


def aggregation_weights(
    similarity: Union[torch.Tensor, Dict[str, torch.Tensor]], negative: str = "clip"
) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """Turns similarities into FedBip aggregation weights.

    ``p_ik = S_ik / Σ_j S_ij`` with the self term included (``S_ii = 1``), no softmax, no temperature.

    Args:
        similarity: An ``[N, N]`` similarity matrix, or ``{group: [N, N]}`` for FedBip-L.
        negative: ``"clip"`` (default) sets negative similarities to 0, so a conflicting client gets
            weight 0; ``"keep"`` uses them verbatim, and a row whose sum is <= 1e-6 falls back to
            self-only (``p_ii = 1``) with a warning.

    Returns:
        Weights of the same structure; every row sums to 1.
    """
    check_negative_policy(negative)
    if isinstance(similarity, dict):
        return {g: _weights(s, negative) for g, s in similarity.items()}
    return _weights(similarity, negative)
