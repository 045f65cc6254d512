"""Baseline server rules run through the same controller: Local, oracle-groups, FedAMP."""

import pytest
import torch
from fedbip_fakes import SITES

from fedbip_nvflare.core import combine, task_vector
from fedbip_nvflare.core.baselines import fedamp_weights
from fedbip_nvflare.server.controller import FedBipController
from fedbip_nvflare.server.rules import make_rule


def _round_io(h, rnd):
    calls = [c for c in h.sites.calls if c.task == "train" and c.round == rnd]
    sent = {c.targets[0]: {n: torch.as_tensor(v) for n, v in c.params.items()} for c in calls}
    returned = {c.targets[0]: {n: torch.as_tensor(v) for n, v in c.returned.items()} for c in calls}
    return sent, returned


def test_local_keeps_each_client_its_own_trained_params(make_harness):
    h = make_harness(aggregation="local", num_rounds=1).run()
    _, returned = _round_io(h, 0)
    for site in SITES:
        for n, t in returned[site].items():
            torch.testing.assert_close(h.controller.thetas[site][n], t, rtol=0, atol=1e-6)
    assert h.controller.method_name() == "local"


def test_oracle_groups_average_within_groups(make_harness):
    groups = {"site-1": "g", "site-2": "g", "site-3": "h"}
    h = make_harness(aggregation="oracle-groups", aggregation_options={"groups": groups}, num_rounds=1).run()
    sent, returned = _round_io(h, 0)
    for n in returned["site-1"]:
        mean = (returned["site-1"][n] + returned["site-2"][n]) / 2
        torch.testing.assert_close(h.controller.thetas["site-1"][n], mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(h.controller.thetas["site-2"][n], mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(h.controller.thetas["site-3"][n], returned["site-3"][n], rtol=0, atol=1e-6)


def test_fedamp_mixes_raw_parameters(make_harness):
    h = make_harness(aggregation="fedamp", aggregation_options={"sigma": 0.2, "self_weight": 0.5}, num_rounds=2).run()
    sent, returned = _round_io(h, 1)
    assert any(not torch.equal(sent["site-1"][n], sent["site-2"][n]) for n in sent["site-1"]), "personalized"
    weights = fedamp_weights([returned[c] for c in SITES], sigma=0.2, self_weight=0.5)
    expected = combine({c: returned[c] for c in SITES}, weights)
    for c in SITES:
        for n in expected[c]:
            torch.testing.assert_close(h.controller.thetas[c][n], expected[c][n], rtol=0, atol=1e-6)
    # it mixes parameters, not updates: the same weights applied to the updates give other models
    on_updates = combine({c: task_vector(returned[c], sent[c]) for c in SITES}, weights)
    assert any(
        not torch.allclose(h.controller.thetas[c][n], sent[c][n] + on_updates[c][n], atol=1e-6)
        for c in SITES
        for n in sent[c]
    )
    assert h.controller.method_name() == "fedamp"


@pytest.mark.parametrize(
    "aggregation, options, message",
    [
        ("fedprox", {}, "aggregation must be one of"),
        ("oracle-groups", {}, "needs aggregation_options"),
        ("fedamp", {"sigma": -1}, "sigma"),
        ("local", {"sigma": 1}, "takes options"),
    ],
)
def test_bad_aggregation_options(aggregation, options, message):
    with pytest.raises(ValueError, match=message):
        FedBipController(model="m", rule=make_rule(aggregation, **options))


def test_fedsa_lora_averages_a_and_keeps_b(make_harness):
    h = make_harness(aggregation="fedsa-lora", num_rounds=2).run()
    for rnd in (0, 1):
        sent, returned = _round_io(h, rnd)
        names = list(returned["site-1"])
        a_names = [n for n in names if ".lora_A." in n]
        assert a_names and len(a_names) < len(names), "the fake adapter has both A and B matrices"
        if rnd == 1:
            # every client trained from the same A (it stays global), and from its own B
            for n in a_names:
                assert all(torch.equal(sent[c][n], sent["site-1"][n]) for c in SITES)
            assert any(not torch.equal(sent["site-1"][n], sent["site-2"][n]) for n in names if n not in a_names)
    sent, returned = _round_io(h, 1)
    for n in returned["site-1"]:
        mean_tau = torch.stack([returned[c][n] - sent[c][n] for c in SITES]).mean(dim=0)
        for c in SITES:
            expected = sent[c][n] + mean_tau if ".lora_A." in n else returned[c][n]
            torch.testing.assert_close(h.controller.thetas[c][n], expected, rtol=0, atol=1e-6)
    assert h.controller.method_name() == "fedsa-lora"
    with pytest.raises(ValueError, match="takes options"):
        make_rule("fedsa-lora", sigma=0.5)


def test_fedavg_ft_averages_then_fine_tunes_locally_in_the_last_round(make_harness):
    h = make_harness(aggregation="fedavg-ft", num_rounds=3).run()
    for rnd in (1, 2):
        sent, _ = _round_io(h, rnd)
        for n in sent["site-1"]:
            assert all(torch.equal(sent[c][n], sent["site-1"][n]) for c in SITES), "one averaged model before FT"
    sent, returned = _round_io(h, 1)
    next_sent, _ = _round_io(h, 2)
    for n in returned["site-1"]:
        mean = torch.stack([returned[c][n] for c in SITES]).mean(dim=0)
        torch.testing.assert_close(next_sent["site-1"][n], mean, rtol=0, atol=1e-6)
    # the last round: each client keeps its own fine-tuned parameters
    _, last = _round_io(h, 2)
    for c in SITES:
        for n, t in last[c].items():
            torch.testing.assert_close(h.controller.thetas[c][n], t, rtol=0, atol=1e-6)
    assert h.controller.method_name() == "fedavg-ft"


def test_fedavg_ft_checks_its_option_and_refuses_the_drop_in():
    from fedbip_nvflare.server.personalization import FedBipModelAggregator

    assert make_rule("fedavg-ft", finetune_rounds=2).for_round(1, 3).name == "local"
    assert make_rule("fedavg-ft").for_round(1, 3).name == "fedavg-ft"
    with pytest.raises(ValueError, match="finetune_rounds must be an int >= 1"):
        make_rule("fedavg-ft", finetune_rounds=0)
    with pytest.raises(ValueError, match="needs the number of rounds"):
        FedBipModelAggregator(rule="fedavg-ft")
