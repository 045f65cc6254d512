"""FedBipController.run() end to end with fake sites: routing, aggregation, persistence, outputs."""

import json
import math
import os
from collections import Counter

import numpy as np
import pytest
import torch
from fedbip_fakes import BAD_BEHAVIOURS, GROUPS, LORA_SHAPES, SITES, accuracy_local, final_accuracy, make_theta0
from fedbip_reference import as_f64, default_group, ref_aggregate
from nvflare.app_common.abstract.fl_model import ParamsType

from fedbip_nvflare.core import apply_update, fedbip_aggregate, task_vector
from fedbip_nvflare.server import ClientStateStore


# -- helpers ---------------------------------------------------------------------------------------
def assert_params_equal(got, expected):
    """Bit-exact equality of two {name: tensor/array} dicts."""
    assert list(got) == list(expected)
    for n in expected:
        g, e = torch.as_tensor(np.asarray(got[n])), torch.as_tensor(np.asarray(expected[n]))
        assert g.dtype == e.dtype and torch.equal(g, e), n


def params_equal(a, b):
    return all(torch.equal(torch.as_tensor(np.asarray(a[n])), torch.as_tensor(np.asarray(b[n]))) for n in b)


def expected_after_round(h, rnd, sites=None):
    """θ̄_i^{t+1} = θ̄_i + Σ_k p_ik τ_k recomputed from what the fake sites were sent and returned.

    Returns (core result {site: params}, float64 reference {site: {name: ndarray}}, core AggregationResult).
    """
    ctl = h.controller
    returned = h.sites.returned(rnd, sites)
    sent = h.sites.sent(rnd)
    order = sorted(returned)
    taus = {c: task_vector(returned[c], sent[c]) for c in order}
    rule = ctl.rule
    sim = {c: task_vector(returned[c], ctl.theta0) for c in order} if rule.similarity_on == "cumulative" else None
    res = fedbip_aggregate(taus, layerwise=rule.layerwise, negative=rule.negative, similarity_vectors=sim)
    core = {c: apply_update(sent[c], res.updates[c]) for c in order}

    # independent float64 reference on the raw arrays
    ref_taus = {c: {n: as_f64(returned[c][n]) - as_f64(sent[c][n]) for n in LORA_SHAPES} for c in order}
    ref_sim = (
        {c: {n: as_f64(returned[c][n]) - as_f64(ctl.theta0[n]) for n in LORA_SHAPES} for c in order}
        if sim is not None
        else None
    )
    group_of = {n: default_group(n) for n in LORA_SHAPES} if rule.layerwise else None
    _, _, upd = ref_aggregate(ref_taus, rule.negative, group_of, ref_sim)
    ref = {c: {n: as_f64(sent[c][n]) + upd[c][n] for n in LORA_SHAPES} for c in order}
    return core, ref, res


def read_rounds(h):
    with open(os.path.join(h.out_dir, "rounds.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_results(h):
    with open(os.path.join(h.out_dir, "results.json")) as f:
        return json.load(f)


def weight_rows(record):
    w = record["weights"]
    mats = w.values() if isinstance(w, dict) else [w]
    return [row for m in mats for row in m]


# -- routing: each site gets one task with its own θ̄_i -------------------------------------------
def test_every_task_targets_one_site_with_its_own_theta(make_harness, adapter_calls):
    h = make_harness(num_rounds=3).run()
    ctl = h.controller
    assert adapter_calls == [("fake/model", ctl._lora, 0)]
    assert_params_equal(ctl.theta0, make_theta0(0))

    assert Counter((c.task, c.round, tuple(c.targets)) for c in h.sites.calls) == Counter(
        {("train", r, (s,)): 1 for r in range(3) for s in SITES} | {("validate", 3, (s,)): 1 for s in SITES}
    )
    for call in h.sites.calls:
        assert len(call.targets) == 1 and call.min_responses == 1
        assert call.params_type == ParamsType.FULL
        assert all(a.dtype == np.float32 for a in call.params.values())
        # exactly the controller's θ̄ of that site at send time
        assert_params_equal({n: torch.from_numpy(a) for n, a in call.params.items()}, call.expected)

    for call in h.sites.train_calls(0):  # round 0: everyone starts from θ̄⁰
        assert_params_equal({n: torch.from_numpy(a) for n, a in call.params.items()}, ctl.theta0)
    for rnd in (1, 2):
        sent = h.sites.sent(rnd)
        for site in SITES:
            others = [s for s in SITES if s != site]
            assert not any(params_equal(sent[site], sent[o]) for o in others), (rnd, site)
            assert not params_equal(sent[site], ctl.theta0)
    # the validate task carries the final θ̄_i
    for call in h.sites.validate_calls():
        assert_params_equal({n: torch.from_numpy(a) for n, a in call.params.items()}, ctl.thetas[call.targets[0]])


def test_timeouts_and_task_names_are_passed_through(make_harness):
    h = make_harness(
        num_rounds=1, train_timeout=7, validate_timeout=9, train_task_name="fit", validate_task_name="eval"
    ).run()
    assert {(c.task, c.timeout) for c in h.sites.calls} == {("fit", 7), ("eval", 9)}
    assert len(h.sites.calls) == 2 * len(SITES)


def test_round_after_round_sent_theta_is_the_previous_aggregate(make_harness):
    h = make_harness(num_rounds=3).run()
    for rnd in range(2):
        core, _, _ = expected_after_round(h, rnd)
        nxt = h.sites.sent(rnd + 1)
        for site in SITES:
            assert_params_equal(nxt[site], core[site])


# -- aggregation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("negative", ["clip", "keep"])
def test_thetas_after_each_round_match_core_and_reference(make_harness, negative):
    h = make_harness(num_rounds=2, negative=negative).run()
    core, ref, res = expected_after_round(h, 1)
    assert sorted(h.controller.thetas) == SITES
    for site in SITES:
        assert_params_equal(h.controller.thetas[site], core[site])
        for n in LORA_SHAPES:
            np.testing.assert_allclose(as_f64(h.controller.thetas[site][n]), ref[site][n], rtol=0, atol=1e-6)
    # the fake data make the weights non-trivial: site-1/site-2 mix, not uniform, not identity
    p = res.weights
    assert p[0, 1] > 0.2 and p[1, 0] > 0.2
    assert not torch.allclose(p, torch.full((3, 3), 1 / 3), atol=1e-2)


@pytest.mark.parametrize("layerwise,similarity_on", [(True, "round"), (False, "cumulative"), (True, "cumulative")])
def test_layerwise_and_cumulative_variants_match_core(make_harness, layerwise, similarity_on):
    h = make_harness(num_rounds=2, layerwise=layerwise, similarity_on=similarity_on).run()
    ctl = h.controller
    core, ref, _ = expected_after_round(h, 1)
    for site in SITES:
        assert_params_equal(ctl.thetas[site], core[site])
        for n in LORA_SHAPES:
            np.testing.assert_allclose(as_f64(ctl.thetas[site][n]), ref[site][n], rtol=0, atol=1e-6)

    # the option changes the result (round 1: θ̄_i ≠ θ̄⁰, so cumulative ≠ round; FedBip-L ≠ model-level)
    sent, returned = h.sites.sent(1), h.sites.returned(1)
    taus = {c: task_vector(returned[c], sent[c]) for c in SITES}
    plain = fedbip_aggregate(taus)
    assert any(
        not torch.allclose(ctl.thetas[c][n], sent[c][n] + plain.updates[c][n], atol=1e-7)
        for c in SITES
        for n in LORA_SHAPES
    )

    record = read_rounds(h)[1]
    if layerwise:
        assert set(record["weights"]) == set(GROUPS) == set(record["similarity"])
    else:
        assert isinstance(record["weights"], list)
    results = read_results(h)
    expected = ("fedbip-l" if layerwise else "fedbip") + ("-cumulative" if similarity_on == "cumulative" else "")
    assert results["method"] == expected
    assert results["options"]["similarity_on"] == similarity_on


def test_log_updates_saves_what_was_sent_and_returned(make_harness):
    from safetensors.torch import load_file

    h = make_harness(num_rounds=1, log_updates=True).run()
    folder = os.path.join(h.out_dir, "updates", "round_000")
    sent, returned = h.sites.sent(0), h.sites.returned(0)
    for site in SITES:
        assert_params_equal(load_file(os.path.join(folder, f"sent_client_{site}.safetensors")), sent[site])
        assert_params_equal(load_file(os.path.join(folder, f"returned_client_{site}.safetensors")), returned[site])


# -- persisted state and output files ----------------------------------------------------------------
def test_persisted_state_equals_thetas(make_harness):
    h = make_harness(num_rounds=3).run()
    last, theta0, thetas, extra = ClientStateStore(h.state_dir).load()
    assert last == 2
    assert_params_equal(theta0, h.controller.theta0)
    assert sorted(thetas) == sorted(h.controller.thetas) == SITES
    for site in SITES:
        assert_params_equal(thetas[site], h.controller.thetas[site])
    assert extra["client_info"]["site-1"]["accuracy_before"] == accuracy_local("site-1", 0)


def test_rounds_and_results_files(make_harness):
    h = make_harness(num_rounds=3).run()
    records = read_rounds(h)
    assert [r["round"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["clients"] == SITES and r["rejected"] == {} and r["missing"] == []
        rows = weight_rows(r)
        assert len(rows) == 3
        for row in rows:
            assert math.isclose(sum(row), 1.0, abs_tol=1e-5)
        assert r["metrics"]["site-2"]["accuracy_local"] == pytest.approx(accuracy_local("site-2", r["round"]))
    # the record holds the core's weights for that round
    _, _, res = expected_after_round(h, 2)
    np.testing.assert_allclose(np.array(records[2]["weights"]), res.weights.numpy(), rtol=0, atol=1e-7)

    results = read_results(h)
    assert results["method"] == "fedbip" and results["num_rounds"] == 3
    assert results["options"]["negative"] == "clip" and results["options"]["model"] == "fake/model"
    assert sorted(results["clients"]) == SITES
    for site in SITES:
        info = results["clients"][site]
        assert info["accuracy"] == pytest.approx(final_accuracy(site))
        assert info["accuracy_before"] == pytest.approx(accuracy_local(site, 0))  # round 0, not later rounds
        assert info["adapter_dir"] == f"/adapters/{site}" and info["task"] == f"task-{site}"
        assert [e["round"] for e in info["history"]] == [0, 1, 2]


# -- invalid updates ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BAD_BEHAVIOURS)
def test_invalid_update_is_excluded_and_the_site_keeps_its_theta(make_harness, kind):
    h = make_harness(num_rounds=2, behaviour={("site-2", 1): kind}).run()
    ctl = h.controller
    kept = h.sites.sent(1)["site-2"]  # its θ̄ after round 0
    assert_params_equal(ctl.thetas["site-2"], kept)
    core, ref, res = expected_after_round(h, 1, sites={"site-1", "site-3"})
    assert res.clients == ["site-1", "site-3"]
    for site in ("site-1", "site-3"):
        assert_params_equal(ctl.thetas[site], core[site])
        for n in LORA_SHAPES:
            np.testing.assert_allclose(as_f64(ctl.thetas[site][n]), ref[site][n], rtol=0, atol=1e-6)

    record = read_rounds(h)[1]
    assert record["clients"] == ["site-1", "site-3"]
    if kind == "none":
        assert record["missing"] == ["site-2"] and record["rejected"] == {}
        assert any("site-2" in m for m in h.log.messages("warning"))
    else:
        assert record["missing"] == [] and list(record["rejected"]) == ["site-2"]
        errors = [m for m in h.log.messages("error") if "site-2" in m]
        assert len(errors) == 1 and record["rejected"]["site-2"] in errors[0]
    assert not any("site-1" in m or "site-3" in m for m in h.log.messages("error"))
    # persisted as well
    _, _, thetas, _ = ClientStateStore(h.state_dir).load()
    assert_params_equal(thetas["site-2"], kept)


@pytest.mark.parametrize(
    "kind,word", [("nan", "non-finite"), ("shape", "shape"), ("missing", "missing"), ("diff", "FULL"), ("int", "dtype")]
)
def test_rejection_reason_is_specific(make_harness, kind, word):
    h = make_harness(num_rounds=1, behaviour={("site-3", 0): kind}).run()
    assert word in read_rounds(h)[0]["rejected"]["site-3"]


def test_site_rejected_in_round_zero_starts_again_from_theta0(make_harness):
    h = make_harness(num_rounds=2, behaviour={("site-3", 0): "nan"}).run()
    sent1 = h.sites.sent(1)
    assert_params_equal(sent1["site-3"], h.controller.theta0)
    assert not params_equal(sent1["site-1"], h.controller.theta0)
    core, _, _ = expected_after_round(h, 1)  # all three aggregate in round 1
    for site in SITES:
        assert_params_equal(h.controller.thetas[site], core[site])


def test_too_few_valid_updates_do_not_aggregate(make_harness):
    h = make_harness(num_rounds=2, min_clients=3, behaviour={("site-3", 0): "nan"}).run()
    ctl = h.controller
    # round 0 dropped: everyone is sent θ̄⁰ again in round 1
    for site, params in h.sites.sent(1).items():
        assert_params_equal(params, ctl.theta0)
    records = read_rounds(h)
    assert records[0]["aggregated"] is False and records[0]["clients"] == ["site-1", "site-2"]
    assert "weights" not in records[0]
    assert any("min_clients=3" in m for m in h.log.messages("warning"))
    assert "weights" in records[1]
    core, _, _ = expected_after_round(h, 1)
    for site in SITES:
        assert_params_equal(ctl.thetas[site], core[site])


def test_too_few_valid_updates_keep_previous_thetas(make_harness):
    h = make_harness(num_rounds=2, min_clients=3, behaviour={("site-1", 1): "none"}).run()
    for site, params in h.sites.sent(1).items():
        assert_params_equal(h.controller.thetas[site], params)
    assert read_rounds(h)[1]["aggregated"] is False


def test_abort_stops_without_aggregating_or_validating(make_harness):
    h = make_harness(num_rounds=2, behaviour={("site-2", 0): "abort"}).run()
    assert h.controller.thetas == {}
    assert not h.sites.validate_calls()
    assert not os.path.exists(os.path.join(h.out_dir, "rounds.jsonl"))
    assert not os.path.exists(os.path.join(h.out_dir, "results.json"))


def test_site_without_validate_result_has_no_accuracy(make_harness):
    h = make_harness(num_rounds=1, behaviour={("site-1", "validate"): "none"}).run()
    clients = read_results(h)["clients"]
    assert "accuracy" not in clients["site-1"]
    assert clients["site-1"]["accuracy_before"] == pytest.approx(accuracy_local("site-1", 0))
    assert clients["site-2"]["accuracy"] == pytest.approx(final_accuracy("site-2"))


def test_validate_result_without_metrics_still_writes_results(make_harness):
    # A validate reply may carry no metrics (FLModel.metrics is None); the run must still finish.
    h = make_harness(num_rounds=1, validate_metrics=False).run()
    clients = read_results(h)["clients"]
    assert sorted(clients) == SITES
    for site in SITES:
        assert "accuracy" not in clients[site] or math.isnan(clients[site]["accuracy"])
        assert clients[site]["adapter_dir"] == f"/adapters/{site}"


def test_task_data_does_not_alias_server_state(make_harness):
    # What a task carries must be a copy ("fp32 numpy copies", client/site.py:to_numpy): a site or a
    # TASK_DATA filter that works in place on the received arrays must not change the server's θ̄.
    theta0 = make_theta0(0)
    h = make_harness(num_rounds=2, behaviour={(s, r): "mutate" for s in SITES for r in range(2)}).run()
    assert_params_equal(h.controller.theta0, theta0)
    for call in h.sites.train_calls(1):
        assert_params_equal({n: torch.from_numpy(a) for n, a in call.params.items()}, call.expected)
    core, _, _ = expected_after_round(h, 0)
    for site in SITES:
        assert_params_equal(h.sites.sent(1)[site], core[site])


# -- options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"negative": "abs"}, r"negative must be one of \('clip', 'keep', 'keep-bounded'\), got 'abs'"),
        ({"similarity_on": "total"}, r"similarity_on must be one of \('round', 'cumulative'\), got 'total'"),
        ({"num_rounds": 0}, "num_rounds must be an int >= 1, got 0"),
        ({"num_rounds": -2}, "num_rounds must be an int >= 1"),
        ({"num_rounds": 2.0}, "num_rounds must be an int >= 1"),
        ({"num_rounds": True}, "num_rounds must be an int >= 1"),
        ({"num_rounds": "3"}, "num_rounds must be an int >= 1"),
        ({"min_clients": 0}, "min_clients must be an int >= 1"),
        ({"train_timeout": -1}, "train_timeout must be an int >= 0"),
        ({"validate_timeout": 1.5}, "validate_timeout must be an int >= 0"),
    ],
)
def test_bad_options_are_rejected_with_clear_messages(adapter_calls, kwargs, match):
    from fedbip_nvflare.server.controller import FedBipController
    from fedbip_nvflare.server.rule import FedBipRule
    from fedbip_nvflare.server.settings import ServerSettings

    rule_kwargs = {k: v for k, v in kwargs.items() if k in FedBipRule.option_names()}
    server_kwargs = {k: v for k, v in kwargs.items() if k not in rule_kwargs}
    with pytest.raises(ValueError, match=match):  # the rule and the settings validate their own options
        FedBipController(model="fake/model", rule=FedBipRule(**rule_kwargs), **server_kwargs)
    with pytest.raises(ValueError, match=match):
        FedBipRule(**rule_kwargs) if rule_kwargs else ServerSettings(model="fake/model", **server_kwargs)


def test_constructor_stores_every_argument(adapter_calls):
    from fedbip_nvflare.server.controller import FedBipController
    from fedbip_nvflare.server.rule import FedBipRule

    kwargs = dict(
        model="m",
        num_rounds=4,
        min_clients=2,
        rule=FedBipRule(layerwise=True, negative="keep", similarity_on="cumulative"),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["query"],
        seed=3,
        train_timeout=5,
        validate_timeout=6,
        resume_from="/x",
        log_updates=True,
        train_task_name="t",
        validate_task_name="v",
    )
    ctl = FedBipController(**kwargs)
    for key, value in kwargs.items():
        assert getattr(ctl, key) == value, key
    assert adapter_calls == []  # θ̄⁰ is built in run(), not at construction
