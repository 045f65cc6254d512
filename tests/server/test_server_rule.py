"""FedBipRule (the server round shared by the controller and the drop-in aggregator): norm bound, option warnings."""

import logging

import pytest
import torch

from fedbip_nvflare.core import l2_norm
from fedbip_nvflare.server.controller import FedBipController
from fedbip_nvflare.server.rule import KEEP_CENTERED_WARNING, FedBipRule
from fedbip_nvflare.server.rules import make_rule


def _round(hostile_scale: float):
    gen = torch.Generator().manual_seed(0)
    theta = {"w": torch.zeros(8)}
    honest = {c: torch.randn(8, generator=gen) * 0.1 for c in ("a", "b", "c")}
    taus = {**honest, "evil": hostile_scale * honest["a"]}  # a scaled copy of a's update
    sent = {c: dict(theta) for c in taus}
    returned = {c: {"w": theta["w"] + t} for c, t in taus.items()}
    return sent, returned, taus


def test_norm_bound_clips_a_scaled_copy_and_keeps_the_weights():
    sent, returned, taus = _round(hostile_scale=50.0)
    free, free_record = FedBipRule().apply(sent, returned, lambda _: sent["a"])
    bounded, record = FedBipRule(norm_bound=2.0).apply(sent, returned, lambda _: sent["a"])
    assert record["weights"] == free_record["weights"], "cosines, hence weights, do not depend on lengths"
    assert set(record["clipped"]) == {"evil"} and "clipped" not in free_record
    median = sorted(l2_norm({"w": t}) for t in taus.values())[1:3]
    limit = 2.0 * sum(median) / 2
    assert record["clipped"]["evil"] == pytest.approx(limit / l2_norm({"w": taus["evil"]}), rel=1e-5)
    # a puts a large weight on its scaled copy: unbounded it is dragged 50x, bounded by at most the limit
    moved_free = float((free["a"]["w"] - sent["a"]["w"]).norm())
    moved_bounded = float((bounded["a"]["w"] - sent["a"]["w"]).norm())
    assert moved_free > 10 * moved_bounded and moved_bounded <= limit + 1e-6


def test_norm_bound_is_validated_and_only_for_fedbip():
    with pytest.raises(ValueError, match="norm bound"):
        FedBipController(model="m", rule=FedBipRule(norm_bound=0))
    with pytest.raises(ValueError, match="norm_bound applies to FedBip's rule only"):
        FedBipController(model="m", rule=make_rule("local", norm_bound=2.0))


@pytest.mark.parametrize("layerwise", [False, True])
def test_streaming_rule_gives_the_same_models_with_heads_per_label_space(layerwise):
    gen = torch.Generator().manual_seed(3)
    clients = ("a", "b", "c")
    sent = {c: {"layers.0.lora_A": torch.randn(4, 6, generator=gen), "head.weight": torch.randn(2, 6)} for c in clients}
    returned = {c: {n: t + 0.1 * torch.randn(t.shape, generator=gen) for n, t in sent[c].items()} for c in clients}
    spaces = {"a": "x", "b": "x", "c": "y"}
    args = (sent, returned, lambda _: sent["a"], ["layers.0.lora_A"], spaces)
    batch, record = FedBipRule(layerwise=layerwise).apply(*args)
    streamed, streamed_record = FedBipRule(layerwise=layerwise, streaming=True).apply(*args)
    assert record == streamed_record
    for c in clients:
        assert batch[c].keys() == streamed[c].keys() == sent[c].keys()
        for name in sent[c]:
            assert torch.allclose(batch[c][name], streamed[c][name], atol=1e-6)
    assert torch.equal(streamed["c"]["head.weight"], returned["c"]["head.weight"])  # alone in its space


def test_keep_with_centred_similarity_warns_and_the_safe_policies_do_not(caplog):
    with caplog.at_level(logging.WARNING, logger="fedbip_nvflare.server.rule"):
        FedBipRule(negative="keep", center_similarity=True)
    assert KEEP_CENTERED_WARNING in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedbip_nvflare.server.rule"):
        FedBipRule(negative="keep-bounded", center_similarity=True)
        FedBipRule(negative="clip", center_similarity=True)
        FedBipRule(negative="keep", center_similarity=False)
    assert not caplog.records


@pytest.mark.parametrize("similarity_on", ["round", "cumulative"])
def test_share_lora_a_averages_a_and_weights_the_rest_by_their_own_cosines(similarity_on):
    gen = torch.Generator().manual_seed(5)
    clients = ("a", "b", "c", "d")
    names = ("q.lora_A.default.weight", "q.lora_B.default.weight", "v.lora_A.default.weight", "v.lora_B.default.weight")
    theta0 = {n: torch.randn(3, 4, generator=gen) for n in names}
    sent = {c: {n: t + 0.05 * torch.randn(t.shape, generator=gen) for n, t in theta0.items()} for c in clients}
    # a and b move alike on B; c and d alike on A only: the weights must come from B alone
    direction = {c: torch.randn(3, 4, generator=gen) for c in ("ab", "cd")}
    returned = {}
    for c in clients:
        step = {}
        for n in names:
            if ".lora_B." in n:
                base = direction["ab"] if c in "ab" else torch.randn(3, 4, generator=gen)
            else:
                base = direction["cd"] if c in "cd" else torch.randn(3, 4, generator=gen)
            step[n] = 0.1 * (base + 0.1 * torch.randn(3, 4, generator=gen))
        returned[c] = {n: sent[c][n] + step[n] for n in names}
    b_names = [n for n in names if ".lora_B." in n]

    def theta0_of(_):
        return theta0

    thetas, record = FedBipRule(similarity_on=similarity_on, share_lora_a=True).apply(sent, returned, theta0_of)
    b_only, b_record = FedBipRule(similarity_on=similarity_on).apply(
        {c: {n: sent[c][n] for n in b_names} for c in clients},
        {c: {n: returned[c][n] for n in b_names} for c in clients},
        lambda _: {n: theta0[n] for n in b_names},
    )
    assert record["weights"] == b_record["weights"] and record["averaged"] == 2
    weights = torch.tensor(record["weights"])
    assert weights[0, 1] > 0.2 and weights[2, 3] < weights[0, 1], "partners on B weigh, partners on A alone do not"
    for c in clients:
        assert thetas[c].keys() == sent[c].keys()
        for n in names:
            if ".lora_A." in n:
                mean_tau = torch.stack([returned[k][n] - sent[k][n] for k in clients]).mean(dim=0)
                torch.testing.assert_close(thetas[c][n], sent[c][n] + mean_tau, rtol=0, atol=1e-6)
            else:
                torch.testing.assert_close(thetas[c][n], b_only[c][n], rtol=0, atol=1e-6)
    assert FedBipRule(similarity_on=similarity_on, share_lora_a=True).method_name() == (
        "fedbip-cumulative-sa" if similarity_on == "cumulative" else "fedbip-sa"
    )


def test_share_lora_a_without_lora_a_is_fedbip_and_only_for_fedbip():
    sent, returned, _ = _round(hostile_scale=1.0)
    plain, plain_record = FedBipRule().apply(sent, returned, lambda _: sent["a"])
    shared, record = FedBipRule(share_lora_a=True).apply(sent, returned, lambda _: sent["a"])
    assert record == plain_record and "averaged" not in record
    assert all(torch.equal(shared[c]["w"], plain[c]["w"]) for c in sent)
    with pytest.raises(ValueError, match="share_lora_a applies to FedBip's rule only"):
        make_rule("fedsa-lora", share_lora_a=True)
