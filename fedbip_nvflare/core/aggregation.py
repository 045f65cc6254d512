"""FedBip personalized aggregation: ``Σ_k p_ik τ_k`` for every client i, model-level or layer-wise."""

from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Union

import torch

from fedbip_nvflare.core.blocks import ColumnBlocks
from fedbip_nvflare.core.grouping import GroupSpec, assign_groups
from fedbip_nvflare.core.similarity import center_gram, cosine_from_gram
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
        updates: ``{client: {name: Σ_k p_ik τ_k}}`` (a :class:`StreamedUpdates` when streaming).
    """

    clients: List[str]
    similarity: WeightsResult
    weights: WeightsResult
    updates: Mapping[str, Params]


def _weight_rows(weights: WeightsResult, key: Optional[str], rows: slice) -> torch.Tensor:
    p = weights[key] if isinstance(weights, dict) else weights
    return p[rows].to(torch.float32)


def combine(
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
    weights: WeightsResult,
    group_of: Optional[Mapping[str, str]] = None,
) -> Dict[str, Params]:
    """Computes ``upd_i = Σ_k p_ik τ_k`` for every client (fp32 math, outputs in the inputs' dtype).

    One pass over the inputs, block of columns by block (:mod:`.blocks`); the extra memory beyond the outputs is
    one block. Each client's output tensors are views of that client's own flat buffers, so they share storage
    with no other client's.

    Args:
        task_vectors: ``{client: {name: τ}}``; the client order is the weights' row order.
        weights: ``[N, N]`` weights, or ``{group: [N, N]}`` with ``group_of`` naming each tensor's group.
        group_of: ``{name: group}`` for layer-wise weights.

    Returns:
        ``{client: {name: update}}``.
    """
    clients = list(task_vectors)
    return dict(zip(clients, _combine_rows(ColumnBlocks([task_vectors[c] for c in clients], group_of), weights)))


def _combine_rows(columns: ColumnBlocks, weights: WeightsResult, rows: slice = slice(None)) -> List[Params]:
    """``[{name: Σ_k p_ik τ_k}]`` for the weight rows ``rows``, in one pass over the stacked task vectors."""
    return columns.combine(lambda key: _weight_rows(weights, key, rows), len(range(len(columns))[rows]))


class StreamedUpdates(Mapping[str, Params]):
    """``{client: upd_i}`` computed when a client's entry is read, for servers that send one client at a time.

    Holds only the inputs and the weights; every read makes one pass over all N task vectors and returns a
    fresh ``{name: update}`` that nothing here keeps, so peak memory is the inputs plus the outputs the caller
    holds on to. Reading every client costs N passes instead of :func:`combine`'s one.

    Args:
        task_vectors: ``{client: {name: τ}}``, the weights' row order; not copied, so keep them unchanged.
        weights: ``[N, N]`` weights, or ``{group: [N, N]}`` with ``group_of``.
        group_of: ``{name: group}`` for layer-wise weights.
    """

    def __init__(
        self,
        task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
        weights: WeightsResult,
        group_of: Optional[Mapping[str, str]] = None,
    ):
        self._clients = list(task_vectors)
        self._index = {c: i for i, c in enumerate(self._clients)}
        self._columns = ColumnBlocks([task_vectors[c] for c in self._clients], group_of)
        self._weights = weights

    def __getitem__(self, client: str) -> Params:
        i = self._index[client]
        return _combine_rows(self._columns, self._weights, slice(i, i + 1))[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)


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
    streaming: bool = False,
) -> AggregationResult:
    """One FedBip server step over the clients that reported.

    Args:
        task_vectors: ``{client: {name: τ_i}}`` with identical names and shapes across clients.
        layerwise: FedBip-L: separate similarities and weights per layer group.
        negative: ``"clip"``, ``"keep"`` or ``"keep-bounded"`` (see :func:`aggregation_weights`).
        similarity_vectors: Vectors to measure similarity on instead of ``task_vectors`` (e.g.
            ``θ_i − θ̄⁰`` for ``similarity_on="cumulative"``), same clients and names.
        groups: Custom layer groups (mapping or callable); default :func:`layer_group`.
        center: Beyond the paper: measure the cosine after removing the mean of the (similarity) vectors,
            i.e. the direction every client moved in this round (see :func:`center_gram`); the combined
            updates are still the raw ``τ_k``. False is the paper's rule.
        streaming: Return the updates as a :class:`StreamedUpdates`, each client's computed when read (peak
            memory: inputs + the outputs held), instead of all N at once in one pass.

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
    columns = ColumnBlocks([task_vectors[c] for c in clients], group_of)
    grams = (columns if similarity_vectors is None else ColumnBlocks([measured[c] for c in clients], group_of)).grams()
    if center:
        grams = {g: center_gram(m) for g, m in grams.items()}
    if layerwise:
        similarity: WeightsResult = {g: cosine_from_gram(m) for g, m in grams.items()}
    else:
        similarity = cosine_from_gram(grams[None])
    weights = aggregation_weights(similarity, negative)
    if streaming:
        updates: Mapping[str, Params] = StreamedUpdates(task_vectors, weights, group_of)
    else:
        updates = dict(zip(clients, _combine_rows(columns, weights)))
    return AggregationResult(clients=clients, similarity=similarity, weights=weights, updates=updates)


def personalized_aggregate(
    task_vectors: Mapping[str, Mapping[str, torch.Tensor]],
    layerwise: bool = False,
    negative: str = "clip",
    similarity_vectors: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
    groups: GroupSpec = None,
    center: bool = False,
    streaming: bool = False,
) -> Mapping[str, Params]:
    """FedBip's personalized updates ``{client: {name: Σ_k p_ik τ_k}}``.

    The personalized parameters of client i for the next round are ``θ̄_i + upd_i``.
    See :func:`fedbip_aggregate` for the arguments; this returns only its ``updates``.
    """
    return fedbip_aggregate(task_vectors, layerwise, negative, similarity_vectors, groups, center, streaming).updates
