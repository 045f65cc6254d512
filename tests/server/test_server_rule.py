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
