"""personalized_aggregate / fedbip_aggregate: model-level, FedBip-L, similarity vectors, dtypes."""

import numpy as np
import pytest
import torch
from fedbip_reference import TWO_LAYER_SHAPES, as_f64, default_group, random_vectors, ref_aggregate

from fedbip_nvflare.core import combine, fedbip_aggregate, personalized_aggregate

CLIENTS = ["site-1", "site-2", "site-3", "site-4"]


def assert_updates_close(got, expected, atol=1e-5):
    assert list(got) == list(expected)
    for c in expected:
        assert set(got[c]) == set(expected[c])
        for n in expected[c]:
            np.testing.assert_allclose(as_f64(got[c][n]), as_f64(expected[c][n]), rtol=0, atol=atol)


@pytest.mark.parametrize("negative", ["clip", "keep"])
@pytest.mark.parametrize("layerwise", [False, True])
def test_random_inputs_match_reference(negative, layerwise):
    vecs = random_vectors(CLIENTS, seed=21)
    res = fedbip_aggregate(vecs, layerwise=layerwise, negative=negative)
    group_of = {n: default_group(n) for n in TWO_LAYER_SHAPES} if layerwise else None
    s_ref, p_ref, upd_ref = ref_aggregate(vecs, negative, group_of)
    sims = res.similarity if layerwise else {None: res.similarity}
    weights = res.weights if layerwise else {None: res.weights}
    assert set(weights) == set(p_ref)
    for g in p_ref:
        np.testing.assert_allclose(sims[g].double().numpy(), s_ref[g], rtol=0, atol=1e-6)
        np.testing.assert_allclose(weights[g].double().numpy(), p_ref[g], rtol=0, atol=1e-6)
    assert_updates_close(res.updates, upd_ref)
    for c in CLIENTS:
        for n, t in res.updates[c].items():
            assert t.dtype == torch.float32 and t.shape == TWO_LAYER_SHAPES[n]


def test_personalized_aggregate_is_fedbip_aggregate_updates():
    vecs = random_vectors(CLIENTS, seed=22)
    a = personalized_aggregate(vecs, layerwise=True, negative="keep")
    b = fedbip_aggregate(vecs, layerwise=True, negative="keep").updates
    for c in CLIENTS:
        for n in TWO_LAYER_SHAPES:
            assert torch.equal(a[c][n], b[c][n])


def test_identical_task_vectors_give_the_mean_to_everyone():
    v = random_vectors(["x"], seed=23)["x"]
    vecs = {c: {n: t.clone() for n, t in v.items()} for c in CLIENTS}
    res = fedbip_aggregate(vecs)
    assert torch.allclose(res.weights, torch.full((4, 4), 0.25), atol=1e-6)
    assert_updates_close(res.updates, vecs, atol=1e-6)


def test_orthogonal_task_vectors_keep_their_own_update():
    vecs = {}
    for i, c in enumerate(CLIENTS):
        w = torch.zeros(2, 4)
        w.view(-1)[i] = i + 1.0
        vecs[c] = {"enc.layer.0.w": w, "enc.layer.1.w": torch.zeros(3)}
    res = fedbip_aggregate(vecs)
    assert torch.equal(res.weights, torch.eye(4))
    for c in CLIENTS:
        assert torch.equal(res.updates[c]["enc.layer.0.w"], vecs[c]["enc.layer.0.w"])


def test_single_client_gets_its_own_update():
    vecs = random_vectors(["only"], seed=24)
    for layerwise in (False, True):
        res = fedbip_aggregate(vecs, layerwise=layerwise)
        for n, t in vecs["only"].items():
            assert torch.equal(res.updates["only"][n], t)


def test_layerwise_with_a_single_default_group_equals_model_level():
    shapes = {"enc.layer.0.q.lora_A.weight": (2, 4), "enc.layer.0.q.lora_B.weight": (4, 2), "enc.layer.0.v.w": (3,)}
    vecs = random_vectors(CLIENTS, shapes=shapes, seed=25)
    model = fedbip_aggregate(vecs, negative="keep")
    layer = fedbip_aggregate(vecs, layerwise=True, negative="keep")
    assert list(layer.weights) == ["enc.layer.0."]
    assert torch.allclose(layer.weights["enc.layer.0."], model.weights, atol=1e-6)
    assert_updates_close(layer.updates, model.updates, atol=1e-6)


def test_layerwise_with_a_custom_single_group_equals_model_level():
    vecs = random_vectors(CLIENTS, seed=26)  # default grouping would give 3 groups
    model = fedbip_aggregate(vecs)
    layer = fedbip_aggregate(vecs, layerwise=True, groups=lambda name: "all")
    assert list(layer.weights) == ["all"]
    assert torch.allclose(layer.weights["all"], model.weights, atol=1e-6)
    assert_updates_close(layer.updates, model.updates, atol=1e-6)


def test_layerwise_weights_are_per_group():
    # a and b agree in layer 0 and are opposite in layer 1; c is orthogonal to both everywhere.
    a = {"enc.layer.0.w": torch.tensor([1.0, 0.0, 0.0]), "enc.layer.1.w": torch.tensor([0.0, 2.0, 0.0])}
    b = {"enc.layer.0.w": torch.tensor([3.0, 0.0, 0.0]), "enc.layer.1.w": torch.tensor([0.0, -1.0, 0.0])}
    c = {"enc.layer.0.w": torch.tensor([0.0, 0.0, 1.0]), "enc.layer.1.w": torch.tensor([0.0, 0.0, 1.0])}
    vecs = {"a": a, "b": b, "c": c}
    res = fedbip_aggregate(vecs, layerwise=True, negative="clip")
    half = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(res.weights["enc.layer.0."], half)
    assert torch.equal(res.weights["enc.layer.1."], torch.eye(3))
    # layer 0: a and b both get (a + b)/2; layer 1: everyone keeps their own
    assert torch.allclose(res.updates["a"]["enc.layer.0.w"], torch.tensor([2.0, 0.0, 0.0]))
    assert torch.allclose(res.updates["b"]["enc.layer.0.w"], torch.tensor([2.0, 0.0, 0.0]))
    assert torch.equal(res.updates["a"]["enc.layer.1.w"], a["enc.layer.1.w"])
    assert torch.equal(res.updates["b"]["enc.layer.1.w"], b["enc.layer.1.w"])
    # model-level mixes the two: cos(a, b) = (3 - 2) / (sqrt(5) * sqrt(10)) > 0, so layer 1 gets b's part
    model = fedbip_aggregate(vecs)
    assert model.weights[0, 1].item() > 0
    assert not torch.allclose(model.updates["a"]["enc.layer.1.w"], a["enc.layer.1.w"])


def test_zero_task_vector_keeps_a_zero_update_and_gets_no_weight():
    vecs = random_vectors(["a", "b", "c"], seed=27)
    vecs["z"] = {n: torch.zeros_like(t) for n, t in vecs["a"].items()}
    for negative in ("clip", "keep"):
        res = fedbip_aggregate(vecs, negative=negative)
        assert torch.equal(res.weights[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
        assert torch.equal(res.weights[:3, 3], torch.zeros(3))
        for n, t in res.updates["z"].items():
            assert torch.equal(t, torch.zeros_like(t))
        # the others aggregate as if z were absent
        without = fedbip_aggregate({c: vecs[c] for c in ("a", "b", "c")}, negative=negative)
        assert_updates_close({c: res.updates[c] for c in ("a", "b", "c")}, without.updates, atol=1e-6)


def test_similarity_vectors_decide_weights_but_task_vectors_are_combined():
    taus = random_vectors(["a", "b", "c"], seed=28)
    # cumulative vectors: a and b identical, c orthogonal to them
    ones = {n: torch.ones_like(t) for n, t in taus["a"].items()}
    first = {n: torch.zeros_like(t) for n, t in taus["a"].items()}
    name0 = next(iter(first))
    first[name0].view(-1)[0] = 1.0
    sims = {"a": ones, "b": {n: 2 * t for n, t in ones.items()}, "c": first}
    # ones and the first basis vector: cos = 1 / sqrt(numel)
    numel = sum(t.numel() for t in ones.values())
    res = fedbip_aggregate(taus, similarity_vectors=sims, negative="clip")
    np.testing.assert_allclose(
        res.similarity.double().numpy(),
        [[1, 1, numel**-0.5], [1, 1, numel**-0.5], [numel**-0.5, numel**-0.5, 1]],
        atol=1e-6,
    )
    _, p_ref, upd_ref = ref_aggregate(taus, "clip", similarity_vectors=sims)
    np.testing.assert_allclose(res.weights.double().numpy(), p_ref[None], atol=1e-6)
    assert_updates_close(res.updates, upd_ref)
    # and differs from measuring on the task vectors themselves
    plain = fedbip_aggregate(taus, negative="clip")
    assert not torch.allclose(plain.weights, res.weights, atol=1e-3)


def test_similarity_vectors_layerwise():
    taus = random_vectors(["a", "b", "c"], seed=29)
    sims = random_vectors(["a", "b", "c"], seed=30)
    res = fedbip_aggregate(taus, layerwise=True, similarity_vectors=sims)
    group_of = {n: default_group(n) for n in TWO_LAYER_SHAPES}
    _, p_ref, upd_ref = ref_aggregate(taus, "clip", group_of, similarity_vectors=sims)
    for g in p_ref:
        np.testing.assert_allclose(res.weights[g].double().numpy(), p_ref[g], atol=1e-6)
    assert_updates_close(res.updates, upd_ref)


def test_similarity_vectors_must_have_the_same_clients_in_order():
    taus = random_vectors(["a", "b"], seed=31)
    with pytest.raises(ValueError, match="same clients"):
        fedbip_aggregate(taus, similarity_vectors={"b": taus["b"], "a": taus["a"]})
    with pytest.raises(ValueError, match="same clients"):
        fedbip_aggregate(taus, similarity_vectors={"a": taus["a"]})


def test_no_clients_is_rejected():
    with pytest.raises(ValueError, match="at least one"):
        fedbip_aggregate({})


def test_client_order_is_equivariant():
    vecs = random_vectors(CLIENTS, seed=32)
    shuffled = {c: vecs[c] for c in ["site-3", "site-1", "site-4", "site-2"]}
    a = personalized_aggregate(vecs, layerwise=True)
    b = personalized_aggregate(shuffled, layerwise=True)
    assert list(b) == list(shuffled)
    for c in CLIENTS:
        for n in TWO_LAYER_SHAPES:
            assert torch.allclose(a[c][n], b[c][n], atol=1e-6)


def test_inputs_are_not_modified():
    vecs = random_vectors(CLIENTS, seed=33)
    before = {c: {n: t.clone() for n, t in v.items()} for c, v in vecs.items()}
    personalized_aggregate(vecs, layerwise=True, negative="keep")
    for c in CLIENTS:
        for n in TWO_LAYER_SHAPES:
            assert torch.equal(vecs[c][n], before[c][n])


def test_combine_with_explicit_weights():
    vecs = {"a": {"w": torch.tensor([1.0, 2.0])}, "b": {"w": torch.tensor([10.0, 20.0])}}
    p = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    upd = combine(vecs, p)
    assert torch.allclose(upd["a"]["w"], torch.tensor([3.25, 6.5]))
    assert torch.equal(upd["b"]["w"], torch.tensor([10.0, 20.0]))
    grouped = combine(vecs, {"g": p.flip(0)}, group_of={"w": "g"})
    assert torch.equal(grouped["a"]["w"], torch.tensor([10.0, 20.0]))


@pytest.mark.parametrize("layerwise", [False, True])
def test_centered_similarity_matches_reference_on_explicitly_centred_vectors(layerwise):
    vecs = random_vectors(CLIENTS, seed=5)
    names = list(vecs[CLIENTS[0]])
    mean = {n: sum(as_f64(vecs[c][n]) for c in CLIENTS) / len(CLIENTS) for n in names}
    centred = {c: {n: as_f64(vecs[c][n]) - mean[n] for n in names} for c in CLIENTS}
    group_of = {n: default_group(n) for n in TWO_LAYER_SHAPES} if layerwise else None
    s_ref, p_ref, upd_ref = ref_aggregate(vecs, "clip", group_of, similarity_vectors=centred)

    res = fedbip_aggregate(vecs, layerwise=layerwise, negative="clip", center=True)

    sims = res.similarity if layerwise else {None: res.similarity}
    for g in s_ref:
        np.testing.assert_allclose(sims[g].numpy(), s_ref[g], atol=1e-5)
    assert_updates_close(res.updates, upd_ref)


def test_centering_removes_a_shared_direction():
    # Every client = a large shared direction + a small private one; pairs (1,2) and (3,4) share the private part.
    torch.manual_seed(0)
    shared, a, b = torch.randn(64) * 10, torch.randn(64), torch.randn(64)
    vecs = {c: {"w": shared + private + 0.01 * torch.randn(64)} for c, private in zip(CLIENTS, [a, a, b, b])}
    plain = fedbip_aggregate(vecs).weights
    centred = fedbip_aggregate(vecs, center=True).weights
    assert plain[0, 2] > 0.15  # the shared direction makes everyone similar
    assert centred[0, 2] == 0.0 and centred[0, 1] > 0.3  # centred: only the partner is similar


def test_combine_by_space_renormalises_weights_within_each_space():
    from fedbip_nvflare.core import combine_by_space, restrict_weights

    weights = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5], [0.2, 0.0, 0.8]])
    np.testing.assert_allclose(restrict_weights(weights, [0, 2]).numpy(), [[2 / 3, 1 / 3], [0.2, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(restrict_weights(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), [0]).numpy(), [[1.0]])
    vecs = {"a": {"h": torch.tensor([3.0])}, "b": {"h": torch.tensor([1.0, 1.0])}, "c": {"h": torch.tensor([0.0])}}
    updates = combine_by_space(vecs, weights, {"a": "x", "b": "y", "c": "x"})
    assert updates["a"]["h"].tolist() == pytest.approx([2.0]) and updates["c"]["h"].tolist() == pytest.approx([0.6])
    assert updates["b"]["h"].tolist() == [1.0, 1.0]  # alone in its space: keeps its own update
