"""A straightforward pairwise-loop FedBip server step, the way public personalized-FL code is usually written.

Each client's update is flattened once; then one Python-level dot product per client pair for the cosines and
one scaled add per pair for the combinations (as in PFLlib's or FedLab's per-pair loops). It is the baseline
the aggregation benchmark compares :func:`fedbip_nvflare.core.personalized_aggregate` against, and a second
implementation to cross-check its numbers. It is faster than the per-parameter variants of those libraries,
which loop over tensors inside the pair loop as well, so the comparison is conservative.
"""

from typing import Dict, Mapping

import torch

from fedbip_nvflare.core import aggregation_weights

Params = Dict[str, torch.Tensor]


def pairwise_personalized(task_vectors: Mapping[str, Mapping[str, torch.Tensor]], negative: str = "clip") -> Dict:
    """Model-level FedBip updates ``{client: {name: Σ_k p_ik τ_k}}`` with per-pair Python loops (fp32 math).

    Args:
        task_vectors: ``{client: {name: τ}}`` with identical names and shapes.
        negative: Negative-cosine policy, as in :func:`fedbip_nvflare.core.aggregation_weights`.

    Returns:
        ``{client: {name: update}}`` in the inputs' dtypes.
    """
    clients = list(task_vectors)
    flat = {c: torch.cat([t.reshape(-1).float() for t in task_vectors[c].values()]) for c in clients}
    n = len(clients)
    similarity = torch.zeros(n, n)
    norms = {c: torch.linalg.vector_norm(flat[c]) for c in clients}
    for i, ci in enumerate(clients):
        for j, cj in enumerate(clients):
            denominator = norms[ci] * norms[cj]
            dot = torch.dot(flat[ci], flat[cj])
            similarity[i, j] = dot / denominator if denominator > 0 else 0.0
    weights = aggregation_weights(similarity, negative)
    reference = task_vectors[clients[0]]
    updates = {}
    for i, ci in enumerate(clients):
        mixed = torch.zeros_like(flat[ci])
        for j, cj in enumerate(clients):
            mixed.add_(flat[cj], alpha=float(weights[i, j]))
        out, offset = {}, 0
        for name, t in reference.items():
            out[name] = mixed[offset : offset + t.numel()].view(t.shape).to(t.dtype).clone()
            offset += t.numel()
        updates[ci] = out
    return updates
