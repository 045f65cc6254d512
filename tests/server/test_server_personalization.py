"""FedBipModelAggregator + FedBipPersonalizationFilter on their own, with a fake NVFlare context."""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
from fedbip_fakes import SITES, make_theta0, site_delta
from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsData
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import make_copy
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import personalized_aggregate
from fedbip_nvflare.models import HEAD_PREFIX
from fedbip_nvflare.server.personalization import (
    FedBipModelAggregator,
    FedBipPersonalizationFilter,
    find_aggregator,
)
from fedbip_nvflare.server.rule import FedBipRule
from fedbip_nvflare.server.state import ClientStateStore


class _Workspace:
    def __init__(self, root: str):
        self.root = root

    def get_run_dir(self, job_id: str) -> str:
        return os.path.join(self.root, job_id)


class _Engine:
    """The engine calls the aggregator and filter make; fired events are kept as ``(type, event data)``."""

    def __init__(self, root: str):
        self.workspace = _Workspace(root)
        self.events: List[Tuple[str, Any]] = []

    def get_workspace(self):
        return self.workspace

    def new_context(self) -> FLContext:
        ctx = FLContext()
        ctx.set_prop(ReservedKey.ENGINE, self, private=True, sticky=False)
        return ctx

    def fire_event(self, event_type: str, fl_ctx: FLContext):
        self.events.append((event_type, fl_ctx.get_prop(FLContextKey.EVENT_DATA)))


def FakeContext(root: str, peer: Optional[str] = None, task: str = "train") -> FLContext:
    """A server-side FLContext with what the filter and the aggregator read: task, recipient, run folder."""
    ctx = FLContext()
    ctx.set_prop(ReservedKey.ENGINE, _Engine(root), private=True, sticky=False)
    ctx.set_prop(ReservedKey.RUN_NUM, "job", private=True, sticky=False)
    ctx.set_prop(ReservedKey.IDENTITY_NAME, "server", private=True, sticky=False)
    ctx.set_prop(FLContextKey.TASK_NAME, task, private=True, sticky=False)
    if peer:
        peer_ctx = FLContext()
        peer_ctx.set_prop(ReservedKey.IDENTITY_NAME, peer, private=False, sticky=False)
        ctx.set_peer_context(peer_ctx)
    return ctx


class FakeSystem:
    """Sends a round through the filter (one copy per recipient) and the sites' answers to the aggregator."""

    def __init__(self, root: str, aggregator: FedBipModelAggregator, torch_format: bool = False):
        self.root, self.aggregator = root, aggregator
        self.engine = _Engine(root)
        self.filter = FedBipPersonalizationFilter(aggregator_name=aggregator.aggregator_name)
        self.torch_format = torch_format
        self.received: Dict[int, Dict[str, dict]] = {}

    def send(self, rnd: int, global_params: Dict[str, torch.Tensor], client: str, task: str = "train") -> dict:
        data = {n: (t.clone() if self.torch_format else t.numpy().copy()) for n, t in global_params.items()}
        shareable = DXO(DataKind.WEIGHTS, data).to_shareable()
        shareable.set_header(AppConstants.CURRENT_ROUND, rnd)
        ctx = FakeContext(self.root, client, task)
        ctx.set_prop(ReservedKey.ENGINE, self.engine, private=True, sticky=False)
        out = self.filter.process(shareable, ctx)
        received = from_shareable(out).data
        self.received.setdefault(rnd, {})[client] = received
        return received

    def round(self, rnd: int, global_params, clients=SITES, diff: bool = False, tamper=None, spaces=None) -> FLModel:
        self.aggregator.reset_stats()
        for client in clients:
            received = self.send(rnd, global_params, client)
            delta = site_delta(client, rnd)
            if tamper and client in tamper:
                delta = tamper[client](delta)
            if diff:
                params = {n: (torch.as_tensor(d) if self.torch_format else d) for n, d in delta.items()}
            else:
                params = {n: received[n] + (torch.as_tensor(d) if self.torch_format else d) for n, d in delta.items()}
            model = FLModel(
                params=params,
                params_type=ParamsType.DIFF if diff else ParamsType.FULL,
                current_round=rnd,
                metrics={"accuracy": 0.5},
                meta={"client_name": client, "NUM_STEPS_CURRENT_ROUND": 10, **(spaces or {}).get(client, {})},
            )
            self.aggregator.accept_model(model)
        return self.aggregator.aggregate_model()


def _expected_after(theta0, rounds: int, clients=SITES):
    thetas = {c: {n: t.clone() for n, t in theta0.items()} for c in clients}
    for rnd in range(rounds):
        taus = {c: {n: torch.as_tensor(d) for n, d in site_delta(c, rnd).items()} for c in clients}
        updates = personalized_aggregate(taus)
        thetas = {c: {n: thetas[c][n] + updates[c][n] for n in theta0} for c in clients}
    return thetas


@pytest.mark.parametrize("torch_format,diff", [(False, False), (True, True), (False, True), (True, False)])
def test_each_client_gets_its_own_model_and_the_update_is_fedbip(tmp_path, torch_format, diff):
    theta0 = make_theta0()
    aggregator = FedBipModelAggregator()
    system = FakeSystem(str(tmp_path), aggregator, torch_format)
    global_params = theta0
    for rnd in range(3):
        result = system.round(rnd, global_params, diff=diff)
        assert result.params_type == ParamsType.FULL
        global_params = {n: torch.as_tensor(v) for n, v in result.params.items()}
    expected = _expected_after(theta0, 3)
    for c in SITES:
        for n in theta0:
            assert torch.allclose(aggregator.thetas[c][n], expected[c][n], atol=1e-6)
    # what each client received in round 2 is its own θ̄ after round 1, in the workflow's format
    after_1 = _expected_after(theta0, 2)
    for c in SITES:
        received = system.received[2][c]
        assert all(isinstance(v, torch.Tensor) == torch_format for v in received.values())
        for n in theta0:
            assert np.allclose(np.asarray(received[n]), after_1[c][n].numpy(), atol=1e-6)
        for other in set(SITES) - {c}:
            assert not np.allclose(np.asarray(received[n]), after_1[other][n].numpy(), atol=1e-6)
    # the workflow's model is the consensus: the mean of the personalized models
    mean = {n: torch.stack([expected[c][n] for c in SITES]).mean(0) for n in theta0}
    assert all(torch.allclose(global_params[n], mean[n], atol=1e-6) for n in theta0)
    assert result.metrics == {"accuracy": 0.5}


def test_a_new_client_starts_from_theta0_not_the_consensus(tmp_path):
    theta0 = make_theta0()
    aggregator = FedBipModelAggregator()
    system = FakeSystem(str(tmp_path), aggregator)
    result = system.round(0, theta0, clients=SITES[:2])
    consensus = {n: torch.as_tensor(v) for n, v in result.params.items()}
    assert not torch.allclose(consensus[next(iter(theta0))], theta0[next(iter(theta0))])
    received = system.send(1, consensus, "site-3")
    for n, t in theta0.items():
        assert np.array_equal(received[n], t.numpy())


def test_other_tasks_pass_unchanged(tmp_path):
    aggregator = FedBipModelAggregator()
    system = FakeSystem(str(tmp_path), aggregator)
    theta0 = make_theta0()
    system.round(0, theta0)
    shareable = DXO(DataKind.WEIGHTS, {n: t.numpy() for n, t in theta0.items()}).to_shareable()
    out = system.filter.process(shareable, FakeContext(str(tmp_path), "site-1", task="validate"))
    assert out is shareable


def test_the_broadcast_data_is_not_modified(tmp_path):
    aggregator = FedBipModelAggregator()
    system = FakeSystem(str(tmp_path), aggregator)
    theta0 = make_theta0()
    system.round(0, theta0)
    original = {n: t.numpy().copy() for n, t in theta0.items()}
    shareable = DXO(DataKind.WEIGHTS, original).to_shareable()
    shared_data = from_shareable(shareable).data
    system.filter.process(make_copy(shareable), FakeContext(str(tmp_path), "site-1"))  # as NVFlare does
    assert all(np.array_equal(shared_data[n], theta0[n].numpy()) for n in theta0)


def test_bad_updates_are_rejected_and_the_others_aggregate(tmp_path):
    theta0 = make_theta0()
    aggregator = FedBipModelAggregator()
    system = FakeSystem(str(tmp_path), aggregator)
    name = next(iter(theta0))
    poisoned = {"site-3": lambda d: {**d, name: np.full_like(d[name], np.nan)}}
    system.round(0, theta0, tamper=poisoned)
    assert set(aggregator.thetas) == {"site-1", "site-2"}
    with open(os.path.join(str(tmp_path), "job", "fedbip", "rounds.jsonl")) as f:
        record = json.loads(f.readline())
    assert record["clients"] == ["site-1", "site-2"]
    assert "non-finite" in record["rejected"]["site-3"]
    expected = _expected_after(theta0, 1, clients=["site-1", "site-2"])
    assert torch.allclose(aggregator.thetas["site-1"][name], expected["site-1"][name], atol=1e-6)


def test_without_the_filter_the_round_fails_loudly(tmp_path):
    aggregator = FedBipModelAggregator(aggregator_name="no-filter")
    theta0 = make_theta0()
    aggregator.accept_model(
        FLModel(params={n: t.numpy() for n, t in theta0.items()}, current_round=0, meta={"client_name": "site-1"})
    )
    with pytest.raises(RuntimeError, match="FedBipPersonalizationFilter sent no model"):
        aggregator.aggregate_model()


def test_the_filter_without_an_aggregator_stops_the_job(tmp_path):
    flt = FedBipPersonalizationFilter(aggregator_name="nobody-built-me")
    shareable = DXO(DataKind.WEIGHTS, {"w": np.zeros(2, np.float32)}).to_shareable()
    panics = []
    flt.system_panic = lambda reason, fl_ctx: panics.append(reason)
    with pytest.raises(RuntimeError, match="no FedBipModelAggregator named 'nobody-built-me'"):
        flt.process(shareable, FakeContext(str(tmp_path), "site-1"))
    assert panics and "nobody-built-me" in panics[0]


def test_state_is_persisted_every_round_and_resumes(tmp_path):
    theta0 = make_theta0()
    first = FedBipModelAggregator(aggregator_name="first")
    system = FakeSystem(str(tmp_path / "run1"), first)
    system.round(0, theta0)
    state = os.path.join(str(tmp_path / "run1"), "job", "fedbip", "state")
    last, saved0, saved, _ = ClientStateStore(state).load()
    assert last == 0 and set(saved) == set(SITES)
    assert all(torch.equal(saved[c][n], first.thetas[c][n]) for c in SITES for n in theta0)

    resumed = FedBipModelAggregator(resume_from=state, aggregator_name="resumed")
    system2 = FakeSystem(str(tmp_path / "run2"), resumed)
    consensus = {n: torch.zeros_like(t) for n, t in theta0.items()}  # what the workflow sends does not matter
    system2.round(1, consensus)
    expected = _expected_after(theta0, 2)
    for c in SITES:
        assert all(torch.allclose(resumed.thetas[c][n], expected[c][n], atol=1e-6) for n in theta0)
    assert all(torch.equal(resumed.theta0[n], theta0[n]) for n in theta0)


def test_options_are_validated_and_the_registry_finds_the_latest():
    with pytest.raises(ValueError, match="negative"):
        FedBipModelAggregator(rule=FedBipRule(negative="absolute"))
    with pytest.raises(ValueError, match="aggregator_name"):
        FedBipModelAggregator(aggregator_name="")
    with pytest.raises(ValueError, match="task_names"):
        FedBipPersonalizationFilter(task_names=[])
    latest = FedBipModelAggregator(aggregator_name="twice")
    assert find_aggregator("twice") is latest


def test_streaming_gives_the_same_personalized_models(tmp_path):
    theta0 = make_theta0()
    aggregator = FedBipModelAggregator(rule=FedBipRule(streaming=True), aggregator_name="streaming")
    assert aggregator.options()["streaming"] is True
    system = FakeSystem(str(tmp_path), aggregator)
    global_params = theta0
    for rnd in range(3):
        result = system.round(rnd, global_params)
        global_params = {n: torch.as_tensor(v) for n, v in result.params.items()}
    expected = _expected_after(theta0, 3)
    for c in SITES:
        assert all(torch.allclose(aggregator.thetas[c][n], expected[c][n], atol=1e-6) for n in theta0)


def test_the_matrices_go_to_experiment_tracking_every_round(tmp_path):
    aggregator = FedBipModelAggregator(aggregator_name="tracked")
    system = FakeSystem(str(tmp_path), aggregator)
    theta0 = make_theta0()
    system.round(0, theta0)
    system.round(1, theta0, clients=SITES[:2])
    tracked = {}
    for event_type, data in system.engine.events:
        assert event_type == ANALYTIC_EVENT_TYPE
        item = AnalyticsData.from_dxo(from_shareable(data))
        tracked[(item.tag, item.step)] = item.value
    assert set(tracked) == {
        (f"{name}/{site}", rnd)
        for name in ("similarity", "weights")
        for rnd, sites in ((0, SITES), (1, SITES[:2]))
        for site in sites
    }
    with open(os.path.join(str(tmp_path), "job", "fedbip", "rounds.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for record in records:
        for i, site in enumerate(record["clients"]):
            for name in ("similarity", "weights"):
                row = tracked[(f"{name}/{site}", record["round"])]
                assert row == pytest.approx(dict(zip(record["clients"], record[name][i])))
    assert sum(tracked[("weights/site-1", 1)].values()) == pytest.approx(1.0)


def _with_head(theta0):
    gen = torch.Generator().manual_seed(5)
    return {**theta0, HEAD_PREFIX + "weight": torch.randn(2, 4, generator=gen), HEAD_PREFIX + "bias": torch.zeros(2)}


def test_a_shared_head_of_one_label_space_is_aggregated(tmp_path):
    aggregator = FedBipModelAggregator(aggregator_name="one-space")
    system = FakeSystem(str(tmp_path), aggregator)
    theta0 = _with_head(make_theta0())
    zero_head = {HEAD_PREFIX + "weight": np.zeros((2, 4), np.float32), HEAD_PREFIX + "bias": np.zeros(2, np.float32)}
    spaces = {site: {K.LABEL_SPACE: "sentiment"} for site in SITES}
    tamper = {site: (lambda d: {**d, **zero_head}) for site in SITES}
    system.round(0, theta0, spaces=spaces, tamper=tamper)
    assert set(aggregator.thetas) == set(SITES)


def test_heads_of_different_label_spaces_fail_the_round_with_an_error_naming_them(tmp_path):
    aggregator = FedBipModelAggregator(aggregator_name="two-spaces")
    system = FakeSystem(str(tmp_path), aggregator)
    theta0 = _with_head(make_theta0())
    zero_head = {HEAD_PREFIX + "weight": np.zeros((2, 4), np.float32), HEAD_PREFIX + "bias": np.zeros(2, np.float32)}
    spaces = {"site-1": {K.LABEL_SPACE: "sentiment"}, "site-2": {K.LABEL_SPACE: "topic"}, "site-3": {}}
    tamper = {site: (lambda d: {**d, **zero_head}) for site in SITES}
    with pytest.raises(
        RuntimeError, match="Heads per label space are not supported.*FedBipRecipe\\(federate_head=True\\)"
    ):
        system.round(0, theta0, spaces=spaces, tamper=tamper)
    assert not aggregator.thetas, "no client's model mixed heads of different label spaces"


def test_the_filter_sends_the_run_key_that_the_state_keeps_and_a_resume_reuses(tmp_path):
    theta0 = make_theta0()
    first = FedBipModelAggregator(aggregator_name="keyed")
    system = FakeSystem(str(tmp_path / "run1"), first)

    def sent_key(system: FakeSystem, client: str, rnd: int) -> str:
        shareable = DXO(DataKind.WEIGHTS, {n: t.numpy().copy() for n, t in theta0.items()}).to_shareable()
        shareable.set_header(AppConstants.CURRENT_ROUND, rnd)
        ctx = FakeContext(system.root, client)
        ctx.set_prop(ReservedKey.ENGINE, system.engine, private=True, sticky=False)
        return from_shareable(system.filter.process(shareable, ctx)).meta[K.RUN_KEY]

    key = sent_key(system, "site-1", 0)
    assert len(key) == 32 and key == first.run_key
    assert {sent_key(system, c, 0) for c in SITES} == {key}
    system.round(0, theta0)
    state = os.path.join(str(tmp_path / "run1"), "job", "fedbip", "state")
    assert ClientStateStore(state).load()[3] == {K.RUN_KEY: key}

    resumed = FedBipModelAggregator(resume_from=state, aggregator_name="keyed-resumed")
    assert sent_key(FakeSystem(str(tmp_path / "run2"), resumed), "site-2", 1) == key
    fresh = FedBipModelAggregator(aggregator_name="keyed-fresh")
    assert sent_key(FakeSystem(str(tmp_path / "run3"), fresh), "site-2", 0) != key
