"""FedBip personalized aggregation: ``Σ_k p_ik τ_k`` for every client i, model-level or layer-wise."""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Union

import torch

from fedbip_nvflare.core.grouping import GroupSpec, assign_groups
from fedbip_nvflare.core.similarity import center_gram, cosine_from_gram, gram_matrices, stacked_rows
from fedbip_nvflare.core.weights import aggregation_weights, check_negative_policy

Params = Dict[str, torch.Tensor]
WeightsResult = Union[torch.Tensor, Dict[str, torch.Tensor]]


@dataclass
class AggregationResult:
    """Everything one FedBip aggregation produced.

    Attributes:
        clients: Client names, the row/column order of the matrices.
        similarity: ``[N, N]`` model-level cosine matrix, or ``{group: [N, N]}`` when layer-wise.
        weights: Aggregation weights of the same structure, rows summing to 1.
        updates: ``{client: {name: Σ_k p_ik τ_k}}``.
    """

    clients: List[str]
    similarity: WeightsResult
    weights: WeightsResult
    updates: Dict[str, Params]


def combine(
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
    weights: WeightsResult,
    group_of: Optional[Mapping[str, str]] = None,
) -> Dict[str, Params]:
    """Computes ``upd_i = Σ_k p_ik τ_k`` tensor by tensor (fp32 math, outputs in the inputs' dtype).

    Args:
        task_vectors: ``{client: {name: τ}}``; the client order is the weights' row order.
        weights: ``[N, N]`` weights, or ``{group: [N, N]}`` with ``group_of`` naming each tensor's group.
        group_of: ``{name: group}`` for layer-wise weights.

    Returns:
        ``{client: {name: update}}``.
    """
    clients = list(task_vectors)
    vectors = [task_vectors[c] for c in clients]
    updates: Dict[str, Params] = {c: {} for c in clients}
    for name, ref in vectors[0].items():
        p = weights[group_of[name]] if group_of is not None else weights
        mixed = p.to(torch.float32) @ stacked_rows(vectors, name)
        for i, client in enumerate(clients):
            updates[client][name] = mixed[i].view(ref.shape).to(ref.dtype if ref.is_floating_point() else torch.float32)
    return updates


def restrict_weights(weights: torch.Tensor, members: List[int]) -> torch.Tensor:
    """The weights among ``members`` only, each row renormalised to sum to 1 (self only if it sums to 0).

    Args:
        weights: ``[N, N]`` weights with non-negative rows.
        members: Row/column indices to keep, in order.

    Returns:
        ``[M, M]`` weights.
    """
    idx = torch.as_tensor(members, dtype=torch.long)
    sub = weights.to(torch.float32)[idx][:, idx].clone()
    sums = sub.sum(dim=1, keepdim=True)
    empty = sums.squeeze(1) <= 0
    sub = sub / torch.where(sums > 0, sums, torch.ones_like(sums))
    sub[empty] = torch.eye(len(members))[empty]
    return sub


def combine_by_space(
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]], weights: torch.Tensor, space_of: Mapping[str, str]
) -> Dict[str, Params]:
    """``upd_i = Σ_k p̃_ik τ_k`` over the clients k that share client i's space (e.g. label space) only.

    For tensors that only clients of the same space can combine, such as classification heads federated per
    label space: ``p̃`` is ``weights`` restricted to the space and renormalised (:func:`restrict_weights`).

    Args:
        task_vectors: ``{client: {name: τ}}``, the row order of ``weights``; names and shapes may differ
            between spaces, not within one.
        weights: ``[N, N]`` weights over all clients.
        space_of: ``{client: space}``.

    Returns:
        ``{client: {name: update}}``.
    """
    clients = list(task_vectors)
    updates: Dict[str, Params] = {}
    for space in dict.fromkeys(space_of[c] for c in clients):
        members = [i for i, c in enumerate(clients) if space_of[c] == space]
        sub = {clients[i]: task_vectors[clients[i]] for i in members}
        updates.update(combine(sub, restrict_weights(weights, members)))
    return updates


def fedbip_aggregate(
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
    layerwise: bool = False,
    negative: str = "clip",
    similarity_vectors: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
    groups: GroupSpec = None,
    center: bool = False,
) -> AggregationResult:
    """One FedBip server step over the clients that reported.

    Args:
        task_vectors: ``{client: {name: τ_i}}`` with identical names and shapes across clients.
        layerwise: FedBip-L: separate similarities and weights per layer group.
        negative: Negative-cosine policy, ``"clip"`` or ``"keep"`` (see :func:`aggregation_weights`).
        similarity_vectors: Vectors to measure similarity on instead of ``task_vectors`` (e.g.
            ``θ_i − θ̄⁰`` for ``similarity_on="cumulative"``), same clients and names.
        groups: Custom layer groups (mapping or callable); default :func:`layer_group`.
        center: Beyond the paper: measure the cosine after removing the mean of the (similarity) vectors,
            i.e. the direction every client moved in this round (see :func:`center_gram`); the combined
            updates are still the raw ``τ_k``. False is the paper's rule.

    Returns:
        The similarities, weights and per-client updates.
    """
    check_negative_policy(negative)
    clients = list(task_vectors)
    if not clients:
        raise ValueError("need at least one client's task vector")
    measured = task_vectors if similarity_vectors is None else similarity_vectors
    if list(measured) != clients:
        raise ValueError("similarity_vectors must hold the same clients, in the same order, as task_vectors")
    names = list(task_vectors[clients[0]])
    group_of = assign_groups(names, groups) if layerwise else None
    grams = gram_matrices([measured[c] for c in clients], group_of)
    if center:
        grams = {g: center_gram(m) for g, m in grams.items()}
    if layerwise:
        similarity: WeightsResult = {g: cosine_from_gram(m) for g, m in grams.items()}
    else:
        similarity = cosine_from_gram(grams[None])
    weights = aggregation_weights(similarity, negative)
    updates = combine(task_vectors, weights, group_of)
    return AggregationResult(clients=clients, similarity=similarity, weights=weights, updates=updates)


def personalized_aggregate(
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
    layerwise: bool = False,
    negative: str = "clip",
    similarity_vectors: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
    groups: GroupSpec = None,
    center: bool = False,
) -> Dict[str, Params]:
    """FedBip's personalized updates ``{client: {name: Σ_k p_ik τ_k}}``.

    The personalized parameters of client i for the next round are ``θ̄_i + upd_i``.
    See :func:`fedbip_aggregate` for the arguments; this returns only its ``updates``.
    """
    return fedbip_aggregate(task_vectors, layerwise, negative, similarity_vectors, groups, center).updates
