"""Properties of aggregation_weights and of the weights fedbip_aggregate produces."""

import numpy as np
import pytest
import torch
from fedbip_reference import random_vectors, ref_weights

from fedbip_nvflare.core import NEGATIVE_POLICIES, aggregation_weights, fedbip_aggregate
from fedbip_nvflare.core.weights import MAX_ROW_GAIN


def clients(n):
    return [f"site-{i}" for i in range(1, n + 1)]


def weight_matrices(weights):
    return list(weights.values()) if isinstance(weights, dict) else [weights]


def test_policies_are_clip_keep_and_keep_bounded():
    assert NEGATIVE_POLICIES == ("clip", "keep", "keep-bounded")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("negative", ["clip", "keep"])
@pytest.mark.parametrize("layerwise", [False, True])
def test_rows_sum_to_one(n, negative, layerwise):
    res = fedbip_aggregate(random_vectors(clients(n), seed=n), layerwise=layerwise, negative=negative)
    mats = weight_matrices(res.weights)
    assert len(mats) == (3 if layerwise else 1)  # layer.0., layer.1., classifier.bias
    for p in mats:
        assert p.shape == (n, n) and p.dtype == torch.float32
        assert torch.allclose(p.sum(dim=1), torch.ones(n), atol=1e-5)
        if negative == "clip":
            assert bool((p >= 0).all())


@pytest.mark.parametrize("negative", ["clip", "keep"])
def test_weights_of_random_similarities_match_reference(negative):
    gen = torch.Generator().manual_seed(3)
    for n in (2, 4, 7):
        s = torch.rand(n, n, generator=gen) * 2 - 1
        s = (s + s.T) / 2
        p = aggregation_weights(s, negative)
        expected = ref_weights(s.double().numpy(), negative)
        np.testing.assert_allclose(p.double().numpy(), expected, rtol=1e-5, atol=1e-5)
        assert torch.allclose(p.sum(dim=1), torch.ones(n), atol=1e-5)


def test_diagonal_is_forced_to_one():
    # a similarity whose diagonal is not 1 is treated as S_ii = 1
    s = torch.tensor([[0.3, 0.5], [0.5, 7.0]])
    p = aggregation_weights(s)
    assert torch.allclose(p, torch.tensor([[1 / 1.5, 0.5 / 1.5], [0.5 / 1.5, 1 / 1.5]]))


def test_identity_similarity_gives_self_only():
    assert torch.equal(aggregation_weights(torch.eye(4)), torch.eye(4))


def test_all_ones_similarity_gives_uniform():
    assert torch.allclose(aggregation_weights(torch.ones(5, 5)), torch.full((5, 5), 0.2))


def test_dict_input_gives_dict_of_weights_per_group():
    s = {"g1": torch.ones(2, 2), "g2": torch.tensor([[1.0, -0.5], [-0.5, 1.0]])}
    p = aggregation_weights(s)
    assert set(p) == {"g1", "g2"}
    assert torch.allclose(p["g1"], torch.full((2, 2), 0.5))
    assert torch.equal(p["g2"], torch.eye(2))


def test_keep_negative_weights_sum_to_one():
    s = torch.tensor([[1.0, -0.5, 0.25], [-0.5, 1.0, 0.0], [0.25, 0.0, 1.0]])
    p = aggregation_weights(s, "keep")
    # row 0: (1, -0.5, 0.25) / 0.75
    assert torch.allclose(p[0], torch.tensor([4 / 3, -2 / 3, 1 / 3]))
    assert torch.allclose(p[1], torch.tensor([-1.0, 2.0, 0.0]))
    assert torch.allclose(p.sum(dim=1), torch.ones(3))


def test_keep_row_sum_at_threshold_falls_back(caplog):
    # row 0 sums to exactly 0, row 1 to 1e-7 (<= 1e-6), row 2 to 1 + ... > threshold
    s = torch.tensor([[1.0, -1.0, 0.0], [-0.9999999, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
    with caplog.at_level("WARNING"):
        p = aggregation_weights(s, "keep")
    assert torch.equal(p[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(p[1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(p[2], torch.tensor([0.0, 0.0, 1.0]))
    assert any("self-only" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_clip_never_warns_since_rows_sum_to_at_least_one(caplog):
    with caplog.at_level("WARNING"):
        p = aggregation_weights(-torch.ones(3, 3), "clip")
    assert torch.equal(p, torch.eye(3))
    assert not caplog.records


def test_input_similarity_is_not_modified():
    s = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
    before = s.clone()
    aggregation_weights(s, "clip")
    aggregation_weights(s, "keep")
    assert torch.equal(s, before)


@pytest.mark.parametrize("bad", ["abs", "CLIP", None, ""])
def test_unknown_negative_policy_is_rejected(bad):
    with pytest.raises(ValueError, match="negative must be one of"):
        aggregation_weights(torch.eye(2), bad)
    with pytest.raises(ValueError, match="negative must be one of"):
        fedbip_aggregate(random_vectors(clients(2)), negative=bad)


@pytest.mark.parametrize("shape", [(3,), (2, 3), (1, 2, 2)])
def test_non_square_similarity_is_rejected(shape):
    with pytest.raises(ValueError, match="square"):
        aggregation_weights(torch.zeros(shape))


def test_keep_bounded_equals_keep_while_negatives_cancel_at_most_half(caplog):
    # row 0: Σ|S| = 1.75, ΣS = 0.75 -> gain 2.33 > 2: clipped; rows 1, 2: gains 1.5 and 1.0: verbatim
    s = torch.tensor([[1.0, -0.5, 0.25], [-0.25, 1.0, 0.0], [0.25, 0.0, 1.0]])
    with caplog.at_level("WARNING"):
        bounded = aggregation_weights(s, "keep-bounded")
    keep = aggregation_weights(s, "keep")
    assert torch.equal(bounded[1:], keep[1:])
    assert torch.allclose(bounded[0], torch.tensor([0.8, 0.0, 0.2]))
    assert any("rows [0]" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_keep_bounded_stops_a_negated_update_from_amplifying_its_target():
    # client 2 returns client 0's update negated: cos = -1 cancels client 0's self term (the hostile benchmark)
    s = torch.tensor([[1.0, 0.113, -1.0], [0.113, 1.0, -0.113], [-1.0, -0.113, 1.0]])
    keep = aggregation_weights(s, "keep")
    assert keep[0].abs().max() > 8, "the paper's keep amplifies the row: weights of magnitude 1/0.113"
    bounded = aggregation_weights(s, "keep-bounded")
    assert bounded[0, 2] == 0.0 and bounded[2, 0] == 0.0
    assert torch.allclose(bounded.sum(dim=1), torch.ones(3))
    assert float(bounded.abs().sum(dim=1).max()) <= MAX_ROW_GAIN


@pytest.mark.parametrize("seed", range(5))
def test_keep_bounded_rows_never_gain_more_than_the_bound(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(6, 6, generator=g) * 2 - 1
    p = aggregation_weights((s + s.T) / 2, "keep-bounded")
    assert torch.allclose(p.sum(dim=1), torch.ones(6), atol=1e-6)
    assert float(p.abs().sum(dim=1).max()) <= MAX_ROW_GAIN + 1e-6
