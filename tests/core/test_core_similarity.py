"""cosine_similarity_matrix: model-level and per-group cosines, zero vectors, half precision."""

import numpy as np
import pytest
import torch
from fedbip_reference import TWO_LAYER_SHAPES, as_f64, random_vectors, ref_aggregate, ref_cosine, ref_weights

from fedbip_nvflare.core import aggregation_weights, cosine_similarity_matrix, fedbip_aggregate, layer_group

CLIENTS = ["s1", "s2", "s3", "s4"]


def test_random_vectors_match_reference():
    vecs = list(random_vectors(CLIENTS, seed=1).values())
    s = cosine_similarity_matrix(vecs)
    np.testing.assert_allclose(s.double().numpy(), ref_cosine(vecs), rtol=0, atol=1e-6)
    assert torch.equal(s.diagonal(), torch.ones(4))


def test_groups_true_uses_default_layer_groups():
    vecs = list(random_vectors(CLIENTS, seed=2).values())
    s = cosine_similarity_matrix(vecs, groups=True)
    names = list(TWO_LAYER_SHAPES)
    expected_groups = {layer_group(n) for n in names}
    assert (
        set(s)
        == expected_groups
        == {
            "base_model.model.encoder.layer.0.",
            "base_model.model.encoder.layer.1.",
            "base_model.model.classifier.bias",
        }
    )
    for g, m in s.items():
        members = [n for n in names if layer_group(n) == g]
        np.testing.assert_allclose(m.double().numpy(), ref_cosine(vecs, members), rtol=0, atol=1e-6)


@pytest.mark.parametrize("groups", [None, False])
def test_groups_none_or_false_is_model_level(groups):
    vecs = list(random_vectors(CLIENTS, seed=2).values())
    s = cosine_similarity_matrix(vecs, groups=groups)
    assert isinstance(s, torch.Tensor) and s.shape == (4, 4)


def test_custom_group_mapping_and_callable():
    vecs = list(random_vectors(CLIENTS, seed=4).values())
    names = list(TWO_LAYER_SHAPES)
    mapping = {n: ("A" if "lora_A" in n else "B") for n in names}
    by_map = cosine_similarity_matrix(vecs, groups=mapping)
    by_call = cosine_similarity_matrix(vecs, groups=lambda n: mapping[n])
    assert set(by_map) == set(by_call) == {"A", "B"}
    for g in ("A", "B"):
        assert torch.equal(by_map[g], by_call[g])
        members = [n for n in names if mapping[n] == g]
        np.testing.assert_allclose(by_map[g].double().numpy(), ref_cosine(vecs, members), atol=1e-6)


def test_identical_vectors_have_cosine_one_and_uniform_weights():
    v = random_vectors(["x"], seed=5)["x"]
    for n in (2, 3, 6):
        s = cosine_similarity_matrix([v] * n)
        assert torch.allclose(s, torch.ones(n, n), atol=1e-6)
        assert torch.allclose(aggregation_weights(s), torch.full((n, n), 1.0 / n), atol=1e-6)


def test_positive_scaling_does_not_change_cosine():
    v = random_vectors(["x"], seed=6)["x"]
    scaled = {n: 1000.0 * t for n, t in v.items()}
    s = cosine_similarity_matrix([v, scaled, {n: -t for n, t in v.items()}])
    expected = torch.tensor([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    assert torch.allclose(s, expected, atol=1e-6)
    assert float(s.abs().max()) <= 1.0


def test_mutually_orthogonal_vectors_give_identity():
    # one-hot directions spread over two tensors
    vecs = []
    for i in range(5):
        flat = torch.zeros(8)
        flat[i] = float(i + 1)
        vecs.append({"a.0.w": flat[:4].reshape(2, 2).clone(), "a.0.b": flat[4:].clone()})
    s = cosine_similarity_matrix(vecs)
    assert torch.equal(s, torch.eye(5))
    assert torch.equal(aggregation_weights(s), torch.eye(5))


def test_zero_vector_has_cosine_zero_with_others_and_one_with_itself():
    vecs = random_vectors(["a", "b", "c"], seed=7)
    vecs["z"] = {n: torch.zeros_like(t) for n, t in vecs["a"].items()}
    s = cosine_similarity_matrix(list(vecs.values()))
    assert s[3, 3].item() == 1.0
    assert torch.equal(s[3, :3], torch.zeros(3)) and torch.equal(s[:3, 3], torch.zeros(3))
    assert not torch.isnan(s).any()
    np.testing.assert_allclose(s.double().numpy(), ref_cosine(list(vecs.values())), atol=1e-6)


def test_all_zero_vectors_give_identity():
    z = {"w": torch.zeros(3)}
    assert torch.equal(cosine_similarity_matrix([z, z, z]), torch.eye(3))


def test_zero_in_one_group_only_is_zero_there_only():
    a = {"enc.layer.0.w": torch.tensor([1.0, 2.0]), "enc.layer.1.w": torch.tensor([1.0, 0.0])}
    b = {"enc.layer.0.w": torch.tensor([0.0, 0.0]), "enc.layer.1.w": torch.tensor([2.0, 0.0])}
    s = cosine_similarity_matrix([a, b], groups=True)
    assert torch.equal(s["enc.layer.0."], torch.eye(2))
    assert torch.allclose(s["enc.layer.1."], torch.ones(2, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_match_fp64_on_the_rounded_values(dtype):
    vecs = random_vectors(CLIENTS, seed=8, dtype=dtype)
    s = cosine_similarity_matrix(list(vecs.values()))
    assert s.dtype == torch.float32
    s_ref = ref_cosine(list(vecs.values()))  # float64 of the same rounded values
    np.testing.assert_allclose(s.double().numpy(), s_ref, rtol=0, atol=1e-6)
    for negative in ("clip", "keep"):
        p = aggregation_weights(s, negative)
        np.testing.assert_allclose(p.double().numpy(), ref_weights(s_ref, negative), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_aggregation_keeps_dtype_and_matches_reference(dtype):
    vecs = random_vectors(CLIENTS, seed=9, dtype=dtype)
    res = fedbip_aggregate(vecs, negative="keep")
    _, p_ref, upd_ref = ref_aggregate(vecs, "keep")
    np.testing.assert_allclose(res.weights.double().numpy(), p_ref[None], rtol=0, atol=1e-5)
    eps = torch.finfo(dtype).eps
    for c in CLIENTS:
        for n, t in res.updates[c].items():
            assert t.dtype == dtype and t.shape == vecs[c][n].shape
            # one rounding of the fp32 result to the half type
            np.testing.assert_allclose(as_f64(t), upd_ref[c][n], rtol=eps, atol=1e-3)


def test_many_tensors_accumulate_to_the_reference():
    # 300 tensors of varied shapes: the per-tensor Gram accumulation must equal the flattened cosine
    gen = torch.Generator().manual_seed(10)
    shapes = {f"m.blocks.{i}.w{j}": (1 + (i % 5), 1 + (j % 3)) for i in range(100) for j in range(3)}
    vecs = [{n: torch.randn(s, generator=gen) for n, s in shapes.items()} for _ in range(6)]
    s = cosine_similarity_matrix(vecs)
    np.testing.assert_allclose(s.double().numpy(), ref_cosine(vecs), rtol=0, atol=2e-6)
    per_group = cosine_similarity_matrix(vecs, groups=True)
    assert len(per_group) == 100
    for g in ("m.blocks.0.", "m.blocks.57.", "m.blocks.99."):
        members = [n for n in shapes if n.startswith(g)]
        np.testing.assert_allclose(per_group[g].double().numpy(), ref_cosine(vecs, members), atol=2e-6)


def test_name_order_does_not_matter():
    vecs = random_vectors(["a", "b"], seed=11)
    reordered = dict(reversed(list(vecs["b"].items())))
    s1 = cosine_similarity_matrix([vecs["a"], vecs["b"]])
    s2 = cosine_similarity_matrix([vecs["a"], reordered])
    assert torch.allclose(s1, s2, atol=1e-6)


def test_mismatched_names_are_rejected():
    a = {"w": torch.ones(2), "b": torch.ones(1)}
    b = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="different tensor names"):
        cosine_similarity_matrix([a, b])
    with pytest.raises(ValueError, match="different tensor names"):
        cosine_similarity_matrix([a, b], groups=True)


def test_no_vectors_is_rejected():
    with pytest.raises(ValueError):
        cosine_similarity_matrix([])
