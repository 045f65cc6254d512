"""Independent float64 NumPy reference of FedBip's server step (DESIGN.md §1), written from the formulas.

Used by the core and server tests to check ``fedbip_nvflare.core`` without reusing any of its code:
flatten, cosine, negative policy, row normalisation, weighted sum of task vectors.
"""

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

ROW_SUM_EPS = 1e-6


def as_f64(t) -> np.ndarray:
    """A tensor / array as a float64 NumPy array (bf16 goes through fp32, which is exact)."""
    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float64).cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def flat(vector: Mapping[str, object], names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Concatenation of the given tensors (all by default) of one task vector."""
    names = list(vector) if names is None else list(names)
    if not names:
        return np.zeros(0)
    return np.concatenate([as_f64(vector[n]).reshape(-1) for n in names])


def ref_cosine(vectors: Sequence[Mapping[str, object]], names: Optional[Sequence[str]] = None) -> np.ndarray:
    """S_ik = cos(τ_i, τ_k); 0 with a zero vector, 1 on the diagonal."""
    x = np.stack([flat(v, names) for v in vectors])
    n = len(vectors)
    s = np.eye(n)
    for i in range(n):
        for k in range(n):
            if i == k:
                continue
            ni, nk = np.linalg.norm(x[i]), np.linalg.norm(x[k])
            s[i, k] = 0.0 if ni == 0 or nk == 0 else float(x[i] @ x[k]) / (ni * nk)
    return s


def ref_weights(s: np.ndarray, negative: str = "clip") -> np.ndarray:
    """p_ik = S_ik / Σ_j S_ij (self included); clip negatives or keep them with a self-only fallback."""
    s = np.array(s, dtype=np.float64)
    np.fill_diagonal(s, 1.0)
    if negative == "clip":
        s = np.maximum(s, 0.0)
    p = np.zeros_like(s)
    for i in range(len(s)):
        total = s[i].sum()
        if total <= ROW_SUM_EPS:
            p[i, i] = 1.0
        else:
            p[i] = s[i] / total
    return p


def group_names(names: Sequence[str], group_of: Optional[Mapping[str, str]]) -> Dict[Optional[str], List[str]]:
    """{group: [names]} (a single None group when model-level)."""
    out: Dict[Optional[str], List[str]] = {}
    for n in names:
        out.setdefault(None if group_of is None else group_of[n], []).append(n)
    return out


def ref_aggregate(
    task_vectors: Mapping[str, Mapping[str, object]],
    negative: str = "clip",
    group_of: Optional[Mapping[str, str]] = None,
    similarity_vectors: Optional[Mapping[str, Mapping[str, object]]] = None,
):
    """The whole step: returns (S, P, updates) with S, P as {group: matrix} ({None: ...} model-level)."""
    clients = list(task_vectors)
    measured = task_vectors if similarity_vectors is None else similarity_vectors
    names = list(task_vectors[clients[0]])
    groups = group_names(names, group_of)
    sims, weights = {}, {}
    updates = {c: {} for c in clients}
    for g, members in groups.items():
        s = ref_cosine([measured[c] for c in clients], members)
        p = ref_weights(s, negative)
        sims[g], weights[g] = s, p
        for n in members:
            stacked = np.stack([as_f64(task_vectors[c][n]) for c in clients])
            for i, c in enumerate(clients):
                updates[c][n] = np.tensordot(p[i], stacked, axes=1)
    return sims, weights, updates


def default_group(name: str) -> str:
    """DESIGN's default FedBip-L group, written independently: up to and including the first `.<digits>.`."""
    parts = name.split(".")
    for i in range(1, len(parts) - 1):
        if parts[i].isdigit() and parts[i].isascii():
            return ".".join(parts[: i + 1]) + "."
    return name


# -- input builders shared by the tests ---------------------------------------------------------------
TWO_LAYER_SHAPES = {
    "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight": (2, 4),
    "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight": (4, 2),
    "base_model.model.encoder.layer.1.attention.self.query.lora_A.weight": (2, 4),
    "base_model.model.encoder.layer.1.attention.self.query.lora_B.weight": (4, 2),
    "base_model.model.classifier.bias": (3,),
}


def random_vectors(clients, shapes=None, seed=0, dtype=torch.float32) -> Dict[str, Dict[str, torch.Tensor]]:
    """{client: {name: N(0, 1) tensor}}, deterministic for a seed."""
    shapes = TWO_LAYER_SHAPES if shapes is None else shapes
    gen = torch.Generator().manual_seed(seed)
    return {c: {n: torch.randn(s, generator=gen).to(dtype) for n, s in shapes.items()} for c in clients}
