"""Modality-independent training options of SiteTrainer, on the real all-MiniLM-L6-v2 (text modality)."""

import math
from typing import List

import pytest
import torch

from fedbip_nvflare.client import TrainSettings, load_task_data
from fedbip_nvflare.client.trainer import TextSiteTrainer
from fedbip_nvflare.models import LoraSettings

DATA = {"suite": "text-tasks", "n_train": 16, "n_test": 8, "seed": 0}
NO_DROPOUT = LoraSettings(dropout=0.0)


def _trainer(minilm_path, **settings) -> TextSiteTrainer:
    """A trainer without any dropout (the encoder's too), so batch splits are the only difference between runs."""
    base = dict(max_length=32, num_threads=1, local_epochs=1)
    trainer = TextSiteTrainer(
        minilm_path, load_task_data(DATA, "site-1"), NO_DROPOUT, TrainSettings(**{**base, **settings}), device="cpu"
    )
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return trainer


def _recorded_steps(monkeypatch, trainer: TextSiteTrainer) -> List[List[torch.Tensor]]:
    """Trains one round, recording the gradients every optimizer step sees."""
    steps: List[List[torch.Tensor]] = []
    original = torch.optim.AdamW.step

    def step(optimizer, *args, **kwargs):
        steps.append([p.grad.clone() for g in optimizer.param_groups for p in g["params"]])
        return original(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    trainer.train(round_index=0)
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    return steps


def test_gradient_accumulation_steps_once_per_group_with_the_larger_batch_gradient(monkeypatch, minilm_path):
    """Two accumulated batches of 8 give one step with the gradient of one batch of 16; a partial group steps."""
    whole = _recorded_steps(monkeypatch, _trainer(minilm_path, batch_size=16))
    accumulated = _recorded_steps(monkeypatch, _trainer(minilm_path, batch_size=8, gradient_accumulation_steps=2))
    single = _recorded_steps(monkeypatch, _trainer(minilm_path, batch_size=8))
    assert len(whole) == len(accumulated) == 1 and len(single) == 2
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(whole[0], accumulated[0]))
    assert any(not torch.allclose(a, b, atol=1e-7) for a, b in zip(whole[0], single[0]))
    partial = _recorded_steps(monkeypatch, _trainer(minilm_path, batch_size=6, gradient_accumulation_steps=2))
    assert len(partial) == 2  # batches 6 + 6 | 4: the last, partial group still steps


def test_gradient_checkpointing_gives_the_same_round(minilm_path):
    plain = _trainer(minilm_path, batch_size=8)
    checkpointed = _trainer(minilm_path, batch_size=8, gradient_checkpointing=True)
    loss_plain = plain.train(round_index=0)["train_loss"]
    loss_checkpointed = checkpointed.train(round_index=0)["train_loss"]
    assert math.isclose(loss_plain, loss_checkpointed, rel_tol=1e-5)
    a, b = plain.get_federated(), checkpointed.get_federated()
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_fp16_autocast_trains_with_a_gradient_scaler(minilm_path):
    trainer = _trainer(minilm_path, batch_size=8, precision="fp16")
    before = trainer.get_federated()
    metrics = trainer.train(round_index=0)
    assert math.isfinite(metrics["train_loss"])
    after = trainer.get_federated()
    assert all(after[n].dtype == torch.float32 for n in after), "what travels stays fp32"
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert 0.0 <= trainer.evaluate() <= 1.0


def test_new_options_are_validated():
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        TrainSettings(gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        TrainSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="precision"):
        TrainSettings(precision="fp8")


def test_options_are_declared_once_and_every_front_takes_them_whole():
    """The Client API script's flags come from TrainSettings' fields; the executor and the recipe carry it whole."""
    import argparse
    import dataclasses
    import inspect

    from fedbip_nvflare.client import fedbip_client
    from fedbip_nvflare.client.executor import FedBipExecutor
    from fedbip_nvflare.client.settings import add_arguments, from_arguments
    from fedbip_nvflare.recipes.fedbip import CLIENT_SCRIPT, client_script_args

    fields = [f.name for f in dataclasses.fields(TrainSettings)]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert sorted(a.dest for a in parser._actions if a.dest != "help") == sorted(fields)
    assert from_arguments(parser.parse_args([])) == TrainSettings(), "the flags' defaults are the dataclass's"
    custom = TrainSettings(train_lora=False, num_threads=2, precision="bf16", gradient_accumulation_steps=3)
    flags = client_script_args(custom.to_dict()).split()
    assert from_arguments(parser.parse_args(flags)) == custom, "the recipe's flags round-trip"
    assert not set(fields) & set(inspect.signature(FedBipExecutor).parameters), "the executor takes settings whole"
    assert CLIENT_SCRIPT == fedbip_client.__file__, "the recipe ships the package's Client API script"
    assert fedbip_client.from_arguments is from_arguments, "the script parses its training flags with TrainSettings'"
