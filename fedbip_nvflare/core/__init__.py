"""FedBip's algorithm in plain PyTorch (no NVFlare imports; nothing of the package outside ``core``).

Public API (stable): :func:`cosine_similarity_matrix`, :func:`aggregation_weights`,
:func:`personalized_aggregate`; plus the building blocks the server uses. The math (``task_vectors``,
``similarity``, ``weights``, ``grouping``, ``aggregation`` with :func:`combine`, the one combine path) runs on the
memory-bounded engine of ``blocks`` (:class:`~fedbip_nvflare.core.blocks.ColumnBlocks`).
"""

from fedbip_nvflare.core.aggregation import (
    AggregationResult,
    StreamedUpdates,
    combine,
    combine_by_space,
    fedbip_aggregate,
    personalized_aggregate,
    restrict_weights,
)
from fedbip_nvflare.core.fingerprint import params_digest
from fedbip_nvflare.core.grouping import assign_groups, layer_group
from fedbip_nvflare.core.similarity import cosine_similarity_matrix
from fedbip_nvflare.core.task_vectors import apply_update, check_update, clip_to_median_norm, l2_norm, task_vector
from fedbip_nvflare.core.weights import NEGATIVE_POLICIES, aggregation_weights

SIMILARITY_ON = ("round", "cumulative")

__all__ = [
    "clip_to_median_norm",
    "params_digest",
    "AggregationResult",
    "StreamedUpdates",
    "NEGATIVE_POLICIES",
    "SIMILARITY_ON",
    "aggregation_weights",
    "apply_update",
    "assign_groups",
    "check_update",
    "combine",
    "combine_by_space",
    "cosine_similarity_matrix",
    "fedbip_aggregate",
    "l2_norm",
    "layer_group",
    "personalized_aggregate",
    "restrict_weights",
    "task_vector",
]
