"""Personalized-aggregation rules FedBip is compared with: Local, ground-truth groups, FedAMP.

Each rule returns an ``[N, N]`` row-stochastic weight matrix over the reporting clients (row i: how
client i's next model mixes the clients' contributions), so every rule runs through the same
:func:`~fedbip_nvflare.core.aggregation.combine` as FedBip.
"""

from typing import Mapping, Sequence

import torch

from fedbip_nvflare.core.similarity import cosine_from_gram, gram_matrices


def local_weights(num_clients: int) -> torch.Tensor:
    """Local training: every client keeps only its own contribution (identity)."""
    return torch.eye(num_clients, dtype=torch.float32)


def group_weights(clients: Sequence[str], groups: Mapping[str, str]) -> torch.Tensor:
    """Ground-truth group averaging ("oracle-groups"): uniform weights within each client's group.

    Args:
        clients: Reporting clients, the matrix order.
        groups: ``{client: group}``; a client missing from it is a group of its own.

    Returns:
        ``[N, N]`` weights, ``1/|group|`` for the reporting members of a client's group, else 0.
    """
    labels = [groups.get(c, "\0" + c) for c in clients]
    same = torch.tensor([[a == b for b in labels] for a in labels], dtype=torch.float32)
    return same / same.sum(dim=1, keepdim=True)


def fedamp_weights(
    params: Sequence[Mapping[str, torch.Tensor]], sigma: float = 0.1, self_weight: float = 0.5
) -> torch.Tensor:
    """FedAMP's attentive message passing weights on the raw federated parameters (HeurFedAMP form).

    ``ξ_ii = self_weight``; for ``j ≠ i``, ``ξ_ij ∝ exp(cos(θ_i, θ_j) / σ)``, scaled to sum to ``1 − self_weight``.
    Unlike FedBip, similarity is measured on the parameters themselves, not on their updates.

    Args:
        params: Each client's federated parameters θ_j after local training.
        sigma: Temperature of the exponential kernel (> 0).
        self_weight: Weight a client keeps on its own parameters, in [0, 1].

    Returns:
        ``[N, N]`` row-stochastic weights (identity for a single client).
    """
    if sigma <= 0:
        raise ValueError(f"FedAMP sigma must be > 0, got {sigma!r}")
    if not 0.0 <= self_weight <= 1.0:
        raise ValueError(f"FedAMP self_weight must be in [0, 1], got {self_weight!r}")
    n = len(params)
    if n == 1:
        return torch.ones(1, 1)
    cos = cosine_from_gram(gram_matrices(params)[None])
    kernel = torch.exp((cos - 1.0) / sigma)  # shifted by the maximum cosine 1 for numerical range
    kernel.fill_diagonal_(0.0)
    others = kernel / kernel.sum(dim=1, keepdim=True) * (1.0 - self_weight)
    return others + torch.eye(n) * self_weight
