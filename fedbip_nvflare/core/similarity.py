"""Pairwise cosine similarity of task vectors, model-level or per layer group."""

from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch

from fedbip_nvflare.core.grouping import GroupSpec, assign_groups

Matrix = torch.Tensor
SimilarityResult = Union[Matrix, Dict[str, Matrix]]


def _common_names(vectors: Sequence[Mapping[str, torch.Tensor]]) -> List[str]:
    if not vectors:
        raise ValueError("need at least one task vector")
    names = list(vectors[0].keys())
    for i, v in enumerate(vectors[1:], start=1):
        if set(v.keys()) != set(names):
            raise ValueError(f"task vector {i} has different tensor names than task vector 0")
    return names


def stacked_rows(vectors: Sequence[Mapping[str, torch.Tensor]], name: str) -> torch.Tensor:
    """One tensor of every vector as the rows of an ``[N, numel]`` fp32 matrix.

    Only this tensor is copied, never the whole vectors, so the extra memory is bounded by
    ``N × (largest tensor)``.
    """
    rows = torch.stack([v[name].detach().reshape(-1) for v in vectors])
    return rows if rows.dtype == torch.float32 else rows.float()


def gram_matrices(
    vectors: Sequence[Mapping[str, torch.Tensor]], group_of: Optional[Mapping[str, str]] = None
) -> Dict[Optional[str], Matrix]:
    """Accumulates the fp32 Gram matrix ``G_ij = <τ_i, τ_j>`` tensor by tensor.

    Args:
        vectors: N task vectors with identical names and shapes.
        group_of: ``{name: group}`` for per-group Grams, or None for a single model-level Gram (key None).

    Returns:
        ``{group: [N, N] fp32 Gram}``.
    """
    names = _common_names(vectors)
    n = len(vectors)
    grams: Dict[Optional[str], Matrix] = {}
    for name in names:
        key = group_of[name] if group_of is not None else None
        rows = stacked_rows(vectors, name)
        gram = grams.get(key)
        if gram is None:
            gram = grams[key] = torch.zeros(n, n, dtype=torch.float32, device=rows.device)
        gram.addmm_(rows, rows.T)
    return grams


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
    names = _common_names(vectors)
    group_of = assign_groups(names, None if groups is True else groups)
    return {g: cosine_from_gram(m) for g, m in gram_matrices(vectors, group_of).items()}
