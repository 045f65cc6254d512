"""One FedBip server round on plain tensors, shared by FedBipController and the drop-in aggregator."""

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from fedbip_nvflare.core import apply_update, clip_to_median_norm, combine_by_space, fedbip_aggregate, task_vector
from fedbip_nvflare.models import is_head

Params = Dict[str, torch.Tensor]
logger = logging.getLogger(__name__)

KEEP_CENTERED_WARNING = (
    "negative='keep' with center_similarity: centred cosines of a round sum to about 0, so weight rows nearly "
    "cancel and 'keep' scales their updates by sum|S| / sum S (unbounded); use negative='keep-bounded' or 'clip' "
    "unless this amplification is what you study"
)


def matrix_json(m) -> object:
    """A similarity/weight matrix (or ``{group: matrix}``) as nested lists for the round logs."""
    return {g: v.tolist() for g, v in m.items()} if isinstance(m, dict) else m.tolist()


def with_heads(
    mixed: Dict[str, Params], vectors: Dict[str, Params], weights: torch.Tensor, spaces: Optional[Dict[str, str]]
) -> Dict[str, Params]:
    """``mixed`` plus the head tensors of ``vectors`` combined within each label space (``spaces`` None: as is)."""
    if spaces is None:
        return mixed
    heads = combine_by_space({c: {n: t for n, t in vectors[c].items() if is_head(n)} for c in mixed}, weights, spaces)
    return {c: {**mixed[c], **heads[c]} for c in mixed}


@dataclass(frozen=True)
class FedBipRule:
    """The server's FedBip rule: ``θ̄_i ← θ̄_i + Σ_k p_ik τ_k`` over the round's accepted clients.

    Attributes:
        layerwise: FedBip-L (similarities and weights per layer group).
        negative: Negative-cosine policy, "clip", "keep" or "keep-bounded" (see ``core.aggregation_weights``).
        similarity_on: "round" (cosine of this round's τ) or "cumulative" (of θ_i − θ̄⁰).
        center: Measure cosines after removing the round's mean vector.
        norm_bound: Clip every task vector to this multiple of the round's median norm before combining them
            (None: no bound).
        streaming: Compute each client's update only when its θ̄_i is built, then drop it (peak memory: one
            update instead of N; N passes over the task vectors instead of one).
    """

    layerwise: bool = False
    negative: str = "clip"
    similarity_on: str = "round"
    center: bool = False
    norm_bound: Optional[float] = None
    streaming: bool = False

    def __post_init__(self) -> None:
        if self.negative == "keep" and self.center:
            logger.warning(KEEP_CENTERED_WARNING)

    def apply(
        self,
        sent: Mapping[str, Params],
        returned: Mapping[str, Params],
        theta0_of: Callable[[Params], Params],
        shared: Optional[List[str]] = None,
        spaces: Optional[Dict[str, str]] = None,
    ) -> Tuple[Dict[str, Params], dict]:
        """Computes every accepted client's next θ̄_i.

        Args:
            sent: ``{client: θ̄_i}`` each client trained from this round.
            returned: ``{client: θ_i}``, the accepted FULL parameters (same names and shapes as ``sent``).
            theta0_of: θ̄⁰ for a client's parameters (used by ``similarity_on="cumulative"``).
            shared: Tensors every client combines (None: all); with ``spaces``, the others are heads.
            spaces: ``{client: label space}``: heads combine only within a label space (None: no such heads).

        Returns:
            ``({client: next θ̄_i}, record)`` where the record holds the sorted clients and the similarity and
            weight matrices as lists (``{group: ...}`` when layer-wise).
        """
        clients = sorted(returned)
        shared = list(returned[clients[0]]) if shared is None else shared
        taus = {c: task_vector(returned[c], sent[c]) for c in clients}
        scales: Dict[str, float] = {}
        if self.norm_bound is not None:
            taus, scales = clip_to_median_norm(taus, self.norm_bound)
        sim_vectors = None
        if self.similarity_on == "cumulative":
            sim_vectors = {}
            for c in clients:
                start = theta0_of(returned[c])
                sim_vectors[c] = task_vector({n: returned[c][n] for n in shared}, {n: start[n] for n in shared})
        result = fedbip_aggregate(
            {c: {n: taus[c][n] for n in shared} for c in clients},
            layerwise=self.layerwise,
            negative=self.negative,
            similarity_vectors=sim_vectors,
            center=self.center,
            streaming=self.streaming,
        )
        weights = result.weights
        if isinstance(weights, dict):  # layer-wise: heads use the mean of the groups' weights
            weights = torch.stack(list(weights.values())).mean(dim=0)
        heads = with_heads({c: {} for c in clients}, taus, weights, spaces)
        thetas = {c: apply_update(sent[c], {**result.updates[c], **heads[c]}) for c in clients}
        record = {
            "clients": clients,
            "similarity": matrix_json(result.similarity),
            "weights": matrix_json(result.weights),
        }
        if self.norm_bound is not None:
            record["clipped"] = scales
        return thetas, record
