"""Pairwise cosine similarity of task vectors, model-level or per layer group."""

from typing import Dict, Mapping, Optional, Sequence, Union

import torch

from fedbip_nvflare.core.blocks import ColumnBlocks, check_same_layout
from fedbip_nvflare.core.grouping import GroupSpec, assign_groups

Matrix = torch.Tensor
SimilarityResult = Union[Matrix, Dict[str, Matrix]]


def gram_matrices(
    vectors: Sequence[Mapping[str, torch.Tensor]], group_of: Optional[Mapping[str, str]] = None
) -> Dict[Optional[str], Matrix]:
    """Accumulates the fp32 Gram matrix ``G_ij = <τ_i, τ_j>`` (see :mod:`.blocks` for how).

    Args:
        vectors: N task vectors with identical names and tensor sizes.
        group_of: ``{name: group}`` for per-group Grams, or None for a single model-level Gram (key None).

    Returns:
        ``{group: [N, N] fp32 Gram}``.
    """
    return ColumnBlocks(vectors, group_of).grams()


def center_gram(gram: Matrix) -> Matrix:
    """The Gram matrix of the vectors minus their mean, ``H G H`` with ``H = I − 11ᵀ/N``, from ``G`` alone.

    Cosines of centred vectors measure how clients deviate alike from the round's mean update, not whether
    they share it; with N = 2 the two centred vectors are opposite (cosine −1).
    """
    n = gram.shape[0]
    h = torch.eye(n, dtype=gram.dtype, device=gram.device) - 1.0 / n
    return h @ gram @ h


def cosine_from_gram(gram: Matrix) -> Matrix:
    """Cosine matrix from a Gram matrix.

    A zero vector has cosine 0 with every other vector; every vector has cosine 1 with itself.
    """
    norms = gram.diagonal().clamp_min(0).sqrt()
    zero = norms == 0
    safe = torch.where(zero, torch.ones_like(norms), norms)
    cos = (gram / torch.outer(safe, safe)).clamp(-1.0, 1.0)
    cos[zero, :] = 0.0
    cos[:, zero] = 0.0
    cos.fill_diagonal_(1.0)
    return cos


def cosine_similarity_matrix(
    vectors: Sequence[Mapping[str, torch.Tensor]], groups: Union[bool, GroupSpec] = None
) -> SimilarityResult:
    """Pairwise cosine similarity ``S_ik = cos(τ_i, τ_k)`` of task vectors.

    Inputs may be bf16/fp16/fp32; dot products are accumulated in fp32, one tensor at a time.

    Args:
        vectors: N task vectors ``{name: Tensor}`` with identical names and shapes.
        groups: None or False for the model-level matrix; True for FedBip-L's default layer groups;
            a mapping name -> group or a callable name -> group for custom groups.

    Returns:
        An ``[N, N]`` fp32 matrix, or ``{group: [N, N]}`` when ``groups`` is given.
    """
    if groups is None or groups is False:
        return cosine_from_gram(gram_matrices(vectors)[None])
    names = check_same_layout(vectors)
    group_of = assign_groups(names, None if groups is True else groups)
    return {g: cosine_from_gram(m) for g, m in gram_matrices(vectors, group_of).items()}
