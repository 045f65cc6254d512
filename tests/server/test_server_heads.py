"""Heads federated per label space: combined only among clients of one label space, under FedBip's weights."""

import json
import os

import numpy as np
import pytest
import torch
from fedbip_fakes import HEAD_HIDDEN, LORA_SHAPES
from fedbip_reference import as_f64, ref_aggregate

from fedbip_nvflare.models import initial_head

SITES4 = ["site-1", "site-2", "site-3", "site-4"]
HEADS = {"site-1": 3, "site-2": 3, "site-3": 5, "site-4": 5}  # two label spaces
HEAD_NAMES = ("head.weight", "head.bias")


def _first_round_weights(harness) -> np.ndarray:
    with open(os.path.join(harness.out_dir, "rounds.jsonl")) as f:
        return np.asarray(json.loads(f.readline())["weights"])


def _restricted(p: np.ndarray, members) -> np.ndarray:
    sub = p[np.ix_(members, members)]
    return sub / sub.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("aggregation", ["fedbip", "oracle-groups", "local"])
def test_heads_join_after_round_0_and_mix_only_within_their_label_space(make_harness, aggregation):
    options = {"groups": {"site-1": "a", "site-2": "a", "site-3": "b", "site-4": "b"}}
    h = make_harness(
        sites=SITES4,
        heads=HEADS,
        num_rounds=2,
        federate_head=True,
        aggregation=aggregation,
        aggregation_options=options if aggregation == "oracle-groups" else None,
    ).run()
    assert not h.log.messages("error")
    sent0, sent1 = h.sites.sent(0), h.sites.sent(1)
    assert all(not any(n.startswith("head.") for n in p) for p in sent0.values()), "θ̄⁰ holds no head"
    for site, labels in HEADS.items():
        assert tuple(sent1[site]["head.weight"].shape) == (labels, HEAD_HIDDEN), site

    returned = h.sites.returned(0)
    start = {s: {**sent0[s], **initial_head(HEADS[s], HEAD_HIDDEN, seed=0)} for s in SITES4}
    taus = {s: {n: returned[s][n] - start[s][n] for n in returned[s]} for s in SITES4}
    weights = _first_round_weights(h)
    if aggregation == "fedbip":  # the weights come from the LoRA tensors alone (the label spaces differ)
        lora_taus = {s: {n: t for n, t in taus[s].items() if n in LORA_SHAPES} for s in SITES4}
        _, p_ref, _ = ref_aggregate(lora_taus, "clip")
        np.testing.assert_allclose(weights, p_ref[None], atol=1e-5)
    for space in ([0, 1], [2, 3]):
        p = _restricted(weights, space)
        for row, i in enumerate(space):
            site = SITES4[i]
            for n in HEAD_NAMES:
                expected = as_f64(start[site][n]) + sum(
                    p[row, col] * as_f64(taus[SITES4[k]][n]) for col, k in enumerate(space)
                )
                np.testing.assert_allclose(as_f64(sent1[site][n]), expected, atol=1e-5)
        for i in space:  # LoRA: mixed with everyone under the full weights
            site = SITES4[i]
            for n in LORA_SHAPES:
                expected = as_f64(start[site][n]) + sum(weights[i, k] * as_f64(taus[SITES4[k]][n]) for k in range(4))
                np.testing.assert_allclose(as_f64(sent1[site][n]), expected, atol=1e-5)


def test_a_result_without_its_head_is_rejected(make_harness):
    heads = {"site-1": 3, "site-2": 3}  # site-3 returns no head
    h = make_harness(heads=heads, num_rounds=1, federate_head=True).run()
    errors = h.log.messages("error")
    assert any("site-3" in m and "no usable head.weight" in m for m in errors), errors
    assert "site-3" not in h.controller.thetas or not any(n.startswith("head.") for n in h.controller.thetas["site-3"])


def test_one_shared_label_space_puts_heads_in_the_similarity(make_harness):
    heads = {s: 3 for s in SITES4}
    h = make_harness(sites=SITES4, heads=heads, num_rounds=1, federate_head=True).run()
    sent0 = h.sites.sent(0)
    returned = h.sites.returned(0)
    taus = {
        s: {n: returned[s][n] - {**sent0[s], **initial_head(3, HEAD_HIDDEN, 0)}[n] for n in returned[s]} for s in SITES4
    }
    _, p_ref, _ = ref_aggregate(taus, "clip")
    weights = _first_round_weights(h)
    np.testing.assert_allclose(weights, p_ref[None], atol=1e-5)
    assert torch.is_tensor(h.controller.thetas["site-1"]["head.weight"])


def test_fedamp_mixes_raw_heads_within_label_spaces(make_harness):
    h = make_harness(sites=SITES4, heads=HEADS, num_rounds=2, federate_head=True, aggregation="fedamp").run()
    returned, sent1 = h.sites.returned(0), h.sites.sent(1)
    weights = _first_round_weights(h)
    for space in ([0, 1], [2, 3]):
        p = _restricted(weights, space)
        for row, i in enumerate(space):
            for n in HEAD_NAMES:
                expected = sum(p[row, col] * as_f64(returned[SITES4[k]][n]) for col, k in enumerate(space))
                np.testing.assert_allclose(as_f64(sent1[SITES4[i]][n]), expected, atol=1e-5)
