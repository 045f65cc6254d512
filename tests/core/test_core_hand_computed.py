"""A 3-client FedBip step computed by hand (DESIGN.md §1), checked exactly against the core.

Task vectors (two tensors, flattened as [w0, w1, b]):
    a = (3, 4, 0), b = (4, 3, 0), c = (0, 3, 4)         all of norm 5
    cos(a, b) = 24/25, cos(a, c) = 12/25, cos(b, c) = 9/25
Row sums of S: a 61/25, b 58/25, c 46/25, so
    p_a = (25, 24, 12)/61, p_b = (24, 25, 9)/58, p_c = (12, 9, 25)/46
and upd_i = Σ_k p_ik τ_k, e.g. upd_a = (25·a + 24·b + 12·c)/61 = (171, 208, 48)/61.
"""

import numpy as np
import pytest
import torch
from fedbip_reference import ref_aggregate

from fedbip_nvflare.core import (
    aggregation_weights,
    cosine_similarity_matrix,
    fedbip_aggregate,
    personalized_aggregate,
)


def tv(w0, w1, b):
    return {"head.w": torch.tensor([[w0, w1]], dtype=torch.float32), "head.b": torch.tensor([b], dtype=torch.float32)}


TASK_VECTORS = {"a": tv(3, 4, 0), "b": tv(4, 3, 0), "c": tv(0, 3, 4)}

S_HAND = np.array([[25, 24, 12], [24, 25, 9], [12, 9, 25]]) / 25.0
P_HAND = np.array([[25 / 61, 24 / 61, 12 / 61], [24 / 58, 25 / 58, 9 / 58], [12 / 46, 9 / 46, 25 / 46]])
UPD_HAND = {  # (w0, w1, b)
    "a": np.array([25 * 3 + 24 * 4 + 12 * 0, 25 * 4 + 24 * 3 + 12 * 3, 12 * 4]) / 61,
    "b": np.array([24 * 3 + 25 * 4 + 9 * 0, 24 * 4 + 25 * 3 + 9 * 3, 9 * 4]) / 58,
    "c": np.array([12 * 3 + 9 * 4 + 25 * 0, 12 * 4 + 9 * 3 + 25 * 3, 25 * 4]) / 46,
}


def test_reference_implementation_matches_hand_values():
    assert np.allclose(UPD_HAND["a"], np.array([171, 208, 48]) / 61)  # as in the module docstring
    s, p, upd = ref_aggregate(TASK_VECTORS)
    np.testing.assert_allclose(s[None], S_HAND, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p[None], P_HAND, rtol=0, atol=1e-15)
    for c, expected in UPD_HAND.items():
        got = np.concatenate([upd[c]["head.w"].reshape(-1), upd[c]["head.b"]])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_similarity_matrix_hand_computed():
    s = cosine_similarity_matrix(list(TASK_VECTORS.values()))
    assert s.shape == (3, 3) and s.dtype == torch.float32
    np.testing.assert_allclose(s.double().numpy(), S_HAND, rtol=0, atol=1e-6)
    assert torch.equal(s, s.T)
    assert torch.equal(s.diagonal(), torch.ones(3))


def test_weights_hand_computed():
    p = aggregation_weights(torch.tensor(S_HAND, dtype=torch.float32))
    np.testing.assert_allclose(p.double().numpy(), P_HAND, rtol=0, atol=1e-6)


def test_updates_hand_computed():
    upd = personalized_aggregate(TASK_VECTORS)
    assert list(upd) == ["a", "b", "c"]
    for c, expected in UPD_HAND.items():
        assert set(upd[c]) == {"head.w", "head.b"}
        assert upd[c]["head.w"].shape == (1, 2) and upd[c]["head.b"].shape == (1,)
        np.testing.assert_allclose(upd[c]["head.w"].double().numpy().reshape(-1), expected[:2], rtol=0, atol=1e-6)
        np.testing.assert_allclose(upd[c]["head.b"].double().numpy(), expected[2:], rtol=0, atol=1e-6)


def test_fedbip_aggregate_returns_all_pieces_in_client_order():
    res = fedbip_aggregate(TASK_VECTORS)
    assert res.clients == ["a", "b", "c"]
    np.testing.assert_allclose(res.similarity.double().numpy(), S_HAND, atol=1e-6)
    np.testing.assert_allclose(res.weights.double().numpy(), P_HAND, atol=1e-6)
    np.testing.assert_allclose(res.updates["c"]["head.b"].double().numpy(), UPD_HAND["c"][2:], atol=1e-6)


# a, b as above and d = -a: cos(a, d) = -1, cos(b, d) = -24/25.
NEG_VECTORS = {"a": tv(3, 4, 0), "b": tv(4, 3, 0), "d": tv(-3, -4, 0)}


def test_clip_gives_zero_weight_to_a_conflicting_client():
    res = fedbip_aggregate(NEG_VECTORS, negative="clip")
    expected = np.array([[25 / 49, 24 / 49, 0], [24 / 49, 25 / 49, 0], [0, 0, 1]])
    np.testing.assert_allclose(res.weights.double().numpy(), expected, rtol=0, atol=1e-6)
    assert res.weights[0, 2].item() == 0.0 and res.weights[2, 0].item() == 0.0
    # d ignores everyone: its update is its own task vector
    assert torch.allclose(res.updates["d"]["head.w"], NEG_VECTORS["d"]["head.w"], atol=1e-6)


def test_keep_uses_negative_weights_verbatim_and_falls_back_for_a_degenerate_row(caplog):
    # row a: (1, 24/25, -1) sums to 24/25 -> (25/24, 1, -25/24); row b: (24/25, 1, -24/25) sums to 1;
    # row d: (-1, -24/25, 1) sums to -24/25 <= 1e-6 -> self-only, with a warning.
    with caplog.at_level("WARNING"):
        res = fedbip_aggregate(NEG_VECTORS, negative="keep")
    expected = np.array([[25 / 24, 1, -25 / 24], [24 / 25, 1, -24 / 25], [0, 0, 1]])
    np.testing.assert_allclose(res.weights.double().numpy(), expected, rtol=0, atol=1e-6)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "self-only" in warnings[0].getMessage() and "[2]" in warnings[0].getMessage()
    # a's update: 25/24·a + b − 25/24·d = 25/12·a + b = (3·25/12 + 4, 4·25/12 + 3, 0)
    np.testing.assert_allclose(
        res.updates["a"]["head.w"].double().numpy().reshape(-1), [75 / 12 + 4, 100 / 12 + 3], rtol=0, atol=1e-5
    )
    assert torch.equal(res.updates["d"]["head.w"], NEG_VECTORS["d"]["head.w"])


def test_keep_without_degenerate_rows_does_not_warn(caplog):
    with caplog.at_level("WARNING"):
        fedbip_aggregate(TASK_VECTORS, negative="keep")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("negative", ["clip", "keep"])
def test_core_matches_reference_on_the_negative_example(negative):
    _, p_ref, upd_ref = ref_aggregate(NEG_VECTORS, negative)
    res = fedbip_aggregate(NEG_VECTORS, negative=negative)
    np.testing.assert_allclose(res.weights.double().numpy(), p_ref[None], rtol=0, atol=1e-6)
    for c in NEG_VECTORS:
        for n in ("head.w", "head.b"):
            np.testing.assert_allclose(res.updates[c][n].double().numpy(), upd_ref[c][n], rtol=0, atol=1e-5)
