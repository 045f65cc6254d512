"""What a new aggregation rule costs: one class and one registry line, then every server front runs it.

``UniformRule`` (θ̄_i ← θ̄_i + mean_k τ_k, every client the same update) is registered for the test only, and runs
through FedBipController's rounds and the drop-in FedBipModelAggregator unchanged.
"""

import json
import os
from dataclasses import dataclass
from typing import ClassVar, List

import pytest
import torch
from fedbip_fakes import SITES, make_theta0, site_delta
from test_server_personalization import FakeSystem

from fedbip_nvflare.server.baselines import WeightedUpdateRule
from fedbip_nvflare.server.personalization import FedBipModelAggregator
from fedbip_nvflare.server.rules import RULES, make_rule


@dataclass(frozen=True)
class UniformRule(WeightedUpdateRule):
    """Every client moves by the mean update of the round's clients."""

    name: ClassVar[str] = "uniform"

    def weights(self, clients: List[str], params) -> torch.Tensor:
        n = len(clients)
        return torch.full((n, n), 1.0 / n)


@pytest.fixture
def uniform(monkeypatch):
    monkeypatch.setitem(RULES, "uniform", UniformRule)  # the one registry line
    return UniformRule


def test_a_registered_rule_runs_in_the_controller(make_harness, uniform):
    h = make_harness(aggregation="uniform", num_rounds=1).run()
    calls = [c for c in h.sites.calls if c.task == "train" and c.round == 0]
    sent = {c.targets[0]: {n: torch.as_tensor(v) for n, v in c.params.items()} for c in calls}
    returned = {c.targets[0]: {n: torch.as_tensor(v) for n, v in c.returned.items()} for c in calls}
    for n in sent["site-1"]:
        mean_tau = torch.stack([returned[c][n] - sent[c][n] for c in SITES]).mean(dim=0)
        for c in SITES:
            torch.testing.assert_close(h.controller.thetas[c][n], sent[c][n] + mean_tau, rtol=0, atol=1e-6)
    assert h.controller.method_name() == "uniform"
    with open(os.path.join(h.out_dir, "results.json")) as f:
        assert json.load(f)["options"]["aggregation"] == "uniform"
    with pytest.raises(ValueError, match="takes options"):
        make_rule("uniform", sigma=0.5)


def test_a_registered_rule_runs_in_the_drop_in_aggregator(tmp_path, uniform):
    theta0 = make_theta0()
    aggregator = FedBipModelAggregator(rule="uniform", aggregator_name="uniform")
    assert isinstance(aggregator.rule, UniformRule) and aggregator.options() == {"aggregation": "uniform"}
    FakeSystem(str(tmp_path), aggregator).round(0, theta0)
    for n, t in theta0.items():
        mean_delta = torch.stack([torch.as_tensor(site_delta(c, 0)[n]) for c in SITES]).mean(dim=0)
        for c in SITES:
            torch.testing.assert_close(aggregator.thetas[c][n], t + mean_delta, rtol=0, atol=1e-6)
