"""A straightforward pairwise-loop FedBip server step, the way public personalized-FL code is usually written.

Each client's update is flattened once; then one Python-level dot product per client pair for the cosines and
one scaled add per pair for the combinations (:func:`pairwise_personalized`), and the per-parameter variant that
also loops over tensors inside the pair loop (:func:`pairwise_per_tensor`), the way per-pair code in public
personalized-FL repositories is usually written. They are the baselines the aggregation benchmark compares
:func:`fedbip_nvflare.core.personalized_aggregate` against, and independent implementations to cross-check it.
"""

from typing import Dict, Mapping

import torch

from fedbip_nvflare.core import aggregation_weights

Params = Dict[str, torch.Tensor]


def pairwise_per_tensor(task_vectors: Mapping[str, Mapping[str, torch.Tensor]], negative: str = "clip") -> Dict:
    """The same step with the loops over client pairs *and* tensors, as per-parameter FL code writes it.

    For each pair, the dot product and the norms are summed tensor by tensor; each client's combination
    adds every other client's tensors one by one.
    """
    clients = list(task_vectors)
    n = len(clients)
    reference = task_vectors[clients[0]]
    gram = torch.zeros(n, n)
    for i, ci in enumerate(clients):
        for j, cj in enumerate(clients):
            total = 0.0
            for name in reference:
                total += float(torch.sum(task_vectors[ci][name].float() * task_vectors[cj][name].float()))
            gram[i, j] = total
    norms = gram.diagonal().clamp_min(0).sqrt()
    similarity = gram / torch.outer(norms, norms).clamp_min(1e-30)
    weights = aggregation_weights(similarity, negative)
    updates = {}
    for i, ci in enumerate(clients):
        out = {name: torch.zeros(t.shape, device=t.device) for name, t in reference.items()}
        for j, cj in enumerate(clients):
            for name in reference:
                out[name] += float(weights[i, j]) * task_vectors[cj][name].float()
        updates[ci] = {name: t.to(reference[name].dtype) for name, t in out.items()}
    return updates


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
