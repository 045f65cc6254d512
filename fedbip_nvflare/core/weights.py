"""Aggregation weights from similarities: ``p_ik = S_ik / Σ_j S_ij`` with a negative-cosine policy."""

import logging
from typing import Dict, Union

import torch

NEGATIVE_POLICIES = ("clip", "keep", "keep-bounded")
ROW_SUM_EPS = 1e-6
# keep-bounded: a row whose Σ_j |S_ij| exceeds this multiple of Σ_j S_ij is weighted as under clip (see below).
# Honest model-level rows of this repository's benchmark runs reach 1.42; a negated update gives about 19.
MAX_ROW_GAIN = 2.0

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
    if negative == "keep-bounded":
        amplified = s.abs().sum(dim=1) > MAX_ROW_GAIN * sums.squeeze(1)
        if bool(amplified.any()):
            rows = amplified.nonzero().flatten().tolist()
            logger.warning(
                "similarity rows %s: negative similarities cancel more than half the positive ones (sum of |S| > %g x "
                "sum of S), which would amplify the weights: these rows use clip (negatives set to 0)",
                rows,
                MAX_ROW_GAIN,
            )
            s[amplified] = s[amplified].clamp_min(0.0)
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
            weight 0; ``"keep"`` uses them verbatim (the paper's formula), and a row whose sum is <= 1e-6 falls
            back to self-only (``p_ii = 1``) with a warning. Under ``"keep"`` a row whose negatives nearly cancel
            its positives has a small sum and weights of large magnitude (``Σ_k |p_ik| = Σ|S| / ΣS``): a client
            sending the negation of client i's update cancels i's self term and amplifies i's update (the hostile
            benchmark: weights ±8.85); centered similarities make most rows sum to about 0. ``"keep-bounded"``
            keeps negative weights only in rows where that gain ``Σ_j |S_ij| / Σ_j S_ij`` is at most
            ``MAX_ROW_GAIN`` (2: the negatives cancel at most half of the positives); other rows use clip, with a
            warning naming them.

    Returns:
        Weights of the same structure; every row sums to 1.
    """
    check_negative_policy(negative)
    if isinstance(similarity, dict):
        return {g: _weights(s, negative) for g, s in similarity.items()}
    return _weights(similarity, negative)
