"""The site's self-check (``holdout_fraction``): held-out examples never trained on, and the starting point chosen
among the received model, the site's own last model and their midpoint by the loss on them."""

import os
from typing import List

import pytest
import torch

from fedbip_nvflare.client import SiteSession, TrainSettings, load_task_data
from fedbip_nvflare.client.self_check import (
    MIX_GRID,
    OWN_FILE,
    RECEIVED_FILE,
    check_partners,
    choose_start,
    mix,
    save_own,
)
from fedbip_nvflare.client.trainer import TextSiteTrainer
from fedbip_nvflare.client.trainer_base import round_seed
from fedbip_nvflare.models import LoraSettings

DATA = {"suite": "text-tasks", "n_train": 16, "n_test": 8, "seed": 0}
SETTINGS = dict(max_length=32, num_threads=1, batch_size=8)


def _trainer(minilm_path, **settings) -> TextSiteTrainer:
    return TextSiteTrainer(
        minilm_path, load_task_data(DATA, "site-1"), LoraSettings(), TrainSettings(**{**SETTINGS, **settings}), "cpu"
    )


def _garbage(params, seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    return {n: t + 0.5 * torch.randn(t.shape, generator=generator) for n, t in params.items()}


def test_holdout_is_never_trained_on_and_no_holdout_keeps_the_old_order(monkeypatch, minilm_path):
    trainer = _trainer(minilm_path, holdout_fraction=0.25)
    assert len(trainer.holdout) == 4 and len(trainer._fit) == 12
    assert not set(trainer.holdout) & set(trainer._fit)
    seen: List[int] = []
    original = TextSiteTrainer._batch_loss

    def record(self, indices):
        seen.extend(indices)
        return original(self, indices)

    monkeypatch.setattr(TextSiteTrainer, "_batch_loss", record)
    metrics = trainer.train(epochs=2, round_index=0)
    assert sorted(seen) == sorted(trainer._fit * 2), "every trained example, twice; no held-out one"
    assert metrics["n_examples"] == 12

    plain = _trainer(minilm_path)
    assert plain.holdout == [] and plain._fit == list(range(16))
    seen.clear()
    plain.train(round_index=1)
    generator = torch.Generator().manual_seed(round_seed(plain.settings.seed, 1))
    assert seen == torch.randperm(16, generator=generator).tolist(), "without a holdout the order is unchanged"


def test_the_check_keeps_a_good_received_model_and_rejects_a_broken_one(tmp_path, minilm_path):
    trainer = _trainer(minilm_path, holdout_fraction=0.25)
    trainer.train(epochs=2, round_index=0)
    save_own(trainer, str(tmp_path))
    own = trainer.get_federated()
    own_loss = trainer.holdout_loss()

    trainer.set_federated(own)  # received exactly the own model: every candidate ties, the received one is kept
    assert choose_start(trainer, own, str(tmp_path))["received_weight"] == 1.0

    broken = _garbage(own)
    trainer.set_federated(broken)
    broken_loss = trainer.holdout_loss()
    check = choose_start(trainer, broken, str(tmp_path))
    assert broken_loss > own_loss, "the test needs a received model that is worse on the held-out examples"
    assert check["received_weight"] < 1.0
    assert check["holdout_loss"] < check["holdout_loss_received"] == pytest.approx(broken_loss)
    loaded = trainer.get_federated()
    expected = mix(broken, own, check["received_weight"])
    assert all(torch.allclose(loaded[n], expected[n]) for n in own), "the chosen candidate is what stays loaded"


def test_the_lowest_held_out_loss_wins_and_ties_keep_the_received_model(tmp_path, minilm_path, monkeypatch):
    trainer = _trainer(minilm_path, holdout_fraction=0.25)
    save_own(trainer, str(tmp_path))
    own = trainer.get_federated()
    received = _garbage(own)
    name = trainer.federated_names[0]
    for target in MIX_GRID:  # a loss whose minimum is the candidate with weight `target`
        point = mix(received, own, target)[name]
        monkeypatch.setattr(trainer, "holdout_loss", lambda p=point: float((trainer.get_federated()[name] - p).norm()))
        assert choose_start(trainer, received, str(tmp_path))["received_weight"] == target
    monkeypatch.setattr(trainer, "holdout_loss", lambda: 1.0)
    assert choose_start(trainer, received, str(tmp_path))["received_weight"] == 1.0


def test_without_a_holdout_or_an_own_model_the_received_model_stays(tmp_path, minilm_path):
    plain = _trainer(minilm_path)
    assert choose_start(plain, plain.get_federated(), str(tmp_path)) == {}
    first = _trainer(minilm_path, holdout_fraction=0.25)
    check = choose_start(first, first.get_federated(), str(tmp_path))
    assert check["received_weight"] == 1.0 and not os.path.exists(tmp_path / OWN_FILE)


def test_a_site_session_checks_every_round_and_its_final_model(tmp_path, minilm_path):
    settings = TrainSettings(**SETTINGS, holdout_fraction=0.25)
    site = SiteSession("site-1", str(tmp_path), minilm_path, DATA, LoraSettings(), settings)
    start = site.trainer.get_federated()
    params, metrics, _ = site.train(start, 0)
    assert metrics["received_weight"] == 1.0 and os.path.exists(tmp_path / OWN_FILE)
    own = {n: torch.as_tensor(v) for n, v in params.items()}
    _, metrics, _ = site.train(_garbage(own), 1)
    assert metrics["received_weight"] < 1.0
    final, _ = site.validate(_garbage(own))
    assert final["received_weight"] < 1.0 and 0.0 <= final["accuracy"] <= 1.0


def test_holdout_fraction_is_validated(minilm_path):
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="holdout_fraction"):
            TrainSettings(holdout_fraction=bad)
    with pytest.raises(ValueError, match="at least 2 training examples"):
        TextSiteTrainer(
            minilm_path,
            load_task_data({**DATA, "n_train": 1}, "site-1"),
            LoraSettings(),
            TrainSettings(**SETTINGS, holdout_fraction=0.5),
            "cpu",
        )


def _scaled(params, base, factor):
    return {n: base[n] + factor * (torch.as_tensor(params[n]) - base[n]) for n in base}


def test_partner_check_keeps_received_models_that_only_carry_the_own_update(tmp_path, minilm_path):
    site = SiteSession(
        "site-1", str(tmp_path), minilm_path, DATA, LoraSettings(), TrainSettings(**SETTINGS, partner_check="control")
    )
    start = site.trainer.get_federated()
    params, metrics, _ = site.train(start, 0)
    assert metrics["received_weight"] == 1.0, "round 0 has nothing to check against"
    assert os.path.exists(tmp_path / OWN_FILE) and os.path.exists(tmp_path / RECEIVED_FILE)
    own = {n: torch.as_tensor(v) for n, v in params.items()}
    # Received exactly the site's own update at 60 %: the control point is the received model, so it is kept.
    received = _scaled(own, start, 0.6)
    site.trainer.set_federated(received)
    check = check_partners(site.trainer, received, str(tmp_path))
    assert check["own_share"] == pytest.approx(0.6, abs=1e-4)
    assert check["check_loss_received"] == pytest.approx(check["check_loss_control"], rel=1e-5)
    assert check["received_weight"] == 1.0
    loaded = site.trainer.get_federated()
    assert all(torch.allclose(loaded[n], received[n]) for n in received)


def test_partner_check_rejects_harmful_partner_updates_for_the_own_model(tmp_path, minilm_path):
    settings = TrainSettings(**SETTINGS, partner_check="control")
    site = SiteSession("site-1", str(tmp_path), minilm_path, DATA, LoraSettings(), settings)
    start = site.trainer.get_federated()
    params, _, _ = site.train(start, 0)
    own = {n: torch.as_tensor(v) for n, v in params.items()}
    harmful = _garbage(own)  # own model plus large noise: the others' part raises the training loss
    site.trainer.set_federated(harmful)
    check = check_partners(site.trainer, harmful, str(tmp_path))
    assert check["check_loss_received"] > check["check_loss_control"]
    assert check["received_weight"] == 0.0
    loaded = site.trainer.get_federated()
    assert all(torch.equal(loaded[n], own[n]) for n in own), "the site's own last model is what stays loaded"
    params, metrics, _ = site.train(harmful, 1)
    assert metrics["received_weight"] == 0.0 and metrics["check_loss_received"] > metrics["check_loss_control"]
    final, _ = site.validate(_garbage({n: torch.as_tensor(v) for n, v in params.items()}, seed=5))
    assert final["received_weight"] == 0.0 and final["check_loss_received"] > final["check_loss_control"]
    assert 0.0 <= final["accuracy"] <= 1.0


def test_partner_check_needs_a_last_round_and_is_off_by_default(tmp_path, minilm_path):
    plain = _trainer(minilm_path)
    assert check_partners(plain, plain.get_federated(), str(tmp_path)) == {}
    checking = _trainer(minilm_path, partner_check="control")
    assert check_partners(checking, checking.get_federated(), str(tmp_path)) == {"received_weight": 1.0}
    with pytest.raises(ValueError, match="set one of them"):
        TrainSettings(partner_check="own", holdout_fraction=0.1)
    for bad in ("yes", True):
        with pytest.raises(ValueError, match="partner_check must be one of"):
            TrainSettings(partner_check=bad)


def test_partner_check_own_keeps_only_a_received_model_that_fits_as_well_as_the_own_one(tmp_path, minilm_path):
    settings = TrainSettings(**SETTINGS, partner_check="own")
    site = SiteSession("site-1", str(tmp_path), minilm_path, DATA, LoraSettings(), settings)
    start = site.trainer.get_federated()
    params, _, _ = site.train(start, 0)
    assert not os.path.exists(tmp_path / RECEIVED_FILE), "the own mode needs only the own model"
    own = {n: torch.as_tensor(v) for n, v in params.items()}
    site.trainer.set_federated(own)  # received exactly the own model: a tie keeps the received one
    check = check_partners(site.trainer, own, str(tmp_path))
    assert check["received_weight"] == 1.0 and check["check_loss_received"] == check["check_loss_own"]
    assert "check_loss_control" not in check
    # Half of the own update: the site's data is fitted worse than by its own model, so the own model wins.
    half = _scaled(own, start, 0.5)
    site.trainer.set_federated(half)
    check = check_partners(site.trainer, half, str(tmp_path))
    assert check["check_loss_received"] > check["check_loss_own"] and check["received_weight"] == 0.0
    loaded = site.trainer.get_federated()
    assert all(torch.equal(loaded[n], own[n]) for n in own)
