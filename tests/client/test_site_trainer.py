"""The site's local fine-tuning library on the real all-MiniLM-L6-v2 with a tiny real task."""

import json
import os

import numpy as np
import pytest
import torch

from fedbip_nvflare.client import SiteSession, TrainSettings, load_task_data
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.models import LoraSettings, initial_adapter, initial_head

DATA = {"suite": "text-tasks", "n_train": 24, "n_test": 16, "seed": 0}
SETTINGS = TrainSettings(batch_size=8, max_length=32, num_threads=1)


@pytest.fixture(scope="module")
def session(tmp_path_factory, minilm_path):
    return SiteSession("site-1", str(tmp_path_factory.mktemp("site")), minilm_path, DATA, LoraSettings(), SETTINGS)


def test_server_initial_adapter_matches_client_adapter_layout(session, minilm_path):
    theta0 = initial_adapter(minilm_path, LoraSettings(), seed=0)
    local = session.trainer.get_federated()
    assert list(theta0) == list(local) == session.trainer.federated_names
    assert all(theta0[n].shape == local[n].shape for n in theta0)
    assert all(".lora_A." in n or ".lora_B." in n for n in theta0)
    again = initial_adapter(minilm_path, LoraSettings(), seed=0)
    assert all(torch.equal(theta0[n], again[n]) for n in theta0), "θ̄⁰ must be deterministic for a seed"
    other = initial_adapter(minilm_path, LoraSettings(), seed=1)
    assert any(not torch.equal(theta0[n], other[n]) for n in theta0 if ".lora_A." in n)


def test_train_round_returns_full_params_metrics_and_keeps_head_local(session, minilm_path):
    theta0 = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    params, metrics, meta = session.train(theta0, current_round=0)
    assert set(params) == set(theta0)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in params.values())
    changed = [n for n in params if not np.array_equal(params[n], theta0[n])]
    assert changed, "local training must change the federated LoRA tensors"
    assert not any(n.startswith("head.") for n in params), "the head is client-private"
    for key in (K.ACCURACY_RECEIVED, K.ACCURACY_LOCAL):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics[K.N_EXAMPLES] == 24 and np.isfinite(metrics[K.TRAIN_LOSS])
    assert meta == {K.TASK: "bbc-news", K.N_TRAIN: 24, K.N_TEST: 16, K.LABEL_SPACE: session.trainer.data.label_space}
    assert os.path.exists(session.head_path)


def test_round_after_first_does_not_report_local_accuracy(session, minilm_path):
    theta0 = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    _, metrics, _ = session.train(theta0, current_round=1)
    assert K.ACCURACY_LOCAL not in metrics


def test_head_persists_across_sessions(session, minilm_path, tmp_path):
    with torch.no_grad():
        session.trainer.model.head.weight.add_(0.5)  # differs from any fresh initialisation
    session.trainer.save_head(session.head_path)
    fresh = SiteSession("site-1", session.state_dir, minilm_path, DATA, LoraSettings(), SETTINGS)
    for name, value in session.trainer.model.head_state().items():
        assert torch.equal(fresh.trainer.model.head_state()[name], value)


def test_received_params_must_match_adapter(session):
    params = {n: t.numpy() for n, t in session.trainer.get_federated().items()}
    name = next(iter(params))
    with pytest.raises(ValueError, match="shape"):
        session.trainer.set_federated({**params, name: np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        session.trainer.set_federated({n: v for n, v in params.items() if n != name})


def test_validate_saves_peft_adapter_with_head_and_labels(session, minilm_path):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModel

    params = {n: t.numpy() for n, t in session.trainer.get_federated().items()}
    metrics, meta = session.validate(params)
    assert 0.0 <= metrics[K.ACCURACY] <= 1.0
    adapter_dir = meta[K.ADAPTER_DIR]
    loaded = get_peft_model_state_dict(PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_path), adapter_dir))
    for n, v in params.items():
        np.testing.assert_array_equal(loaded[n].numpy(), v)
    with open(os.path.join(adapter_dir, "labels.json")) as f:
        labels = json.load(f)
    assert labels["task"] == "bbc-news" and len(labels["label_names"]) == 5


def test_data_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="exactly one of 'suite'"):
        load_task_data({}, "site-1")
    with pytest.raises(ValueError, match="unknown data config keys"):
        load_task_data({"suite": "text-tasks", "bogus": 1}, "site-1")
    with pytest.raises(FileNotFoundError):
        load_task_data({"train_path": str(tmp_path / "missing.csv")}, "site-1")


def test_site_files_are_loaded(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"good movie {i},pos\nbad movie {i},neg\n" for i in range(10)))
    data = load_task_data({"train_path": str(path), "test_fraction": 0.2}, "site-9")
    assert data.label_names == ["neg", "pos"] and len(data.train.texts) + len(data.test.texts) == 20


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="local_epochs"):
        TrainSettings(local_epochs=0)
    with pytest.raises(ValueError, match="target_modules"):
        LoraSettings(target_modules=())
    with pytest.raises(ValueError, match="lora r"):
        LoraSettings(r=0)


def test_probe_trains_only_the_head(tmp_path, minilm_path):
    from dataclasses import replace

    probe = SiteSession("site-5", str(tmp_path), minilm_path, DATA, LoraSettings(), replace(SETTINGS, train_lora=False))
    theta0 = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    head_before = probe.trainer.model.head_state()
    params, metrics, _ = probe.train(theta0, current_round=0)
    assert all(np.array_equal(params[n], theta0[n]) for n in theta0), "a probe leaves the LoRA tensors untouched"
    assert any(not torch.equal(head_before[n], v) for n, v in probe.trainer.model.head_state().items())
    assert np.isfinite(metrics[K.TRAIN_LOSS])


def test_federated_head_travels_with_the_lora_tensors(tmp_path, minilm_path):
    from dataclasses import replace

    settings = replace(SETTINGS, federate_head=True)
    site = SiteSession("site-1", str(tmp_path), minilm_path, DATA, LoraSettings(), settings)
    theta0 = initial_adapter(minilm_path, LoraSettings(), seed=0, head_labels=5)
    assert site.trainer.federated_names == list(theta0)
    assert theta0["head.weight"].shape == (5, 384) and theta0["head.bias"].shape == (5,)
    params, _, _ = site.train({n: t.numpy() for n, t in theta0.items()}, current_round=0)
    assert set(params) == set(theta0) and not np.array_equal(params["head.weight"], theta0["head.weight"].numpy())
    site.trainer.set_federated({n: t.numpy() for n, t in theta0.items()})
    torch.testing.assert_close(site.trainer.model.head_state()["head.weight"], theta0["head.weight"])
    wrong = initial_adapter(minilm_path, LoraSettings(), seed=0, head_labels=7)
    with pytest.raises(ValueError, match="head.weight"):
        site.trainer.set_federated({n: t.numpy() for n, t in wrong.items()})


def test_fresh_head_is_the_servers_and_a_missing_head_is_kept(tmp_path, minilm_path):
    from dataclasses import replace

    site = SiteSession(
        "site-1", str(tmp_path), minilm_path, DATA, LoraSettings(), replace(SETTINGS, federate_head=True)
    )
    labels = len(site.trainer.data.label_names)
    fresh = initial_head(labels, 384, seed=0)
    head = site.trainer.model.head_state()
    assert all(torch.equal(head[n], fresh[n]) for n in fresh), "a site starts from the server's fresh head"
    lora_only = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    params, _, meta = site.train(lora_only, current_round=0)  # heads per label space: none sent in round 0
    assert set(params) == set(lora_only) | set(fresh)
    with torch.no_grad():
        site.trainer.model.head.weight.add_(1.0)
    kept = site.trainer.model.head_state()["head.weight"].clone()
    site.trainer.set_federated(lora_only)
    torch.testing.assert_close(site.trainer.model.head_state()["head.weight"], kept)
    assert meta[K.LABEL_SPACE] == site.trainer.data.label_space and len(meta[K.LABEL_SPACE]) == 16


def test_a_round_is_reproducible_in_a_fresh_process(session, minilm_path, tmp_path):
    # NVFlare's simulator may start a new process per task: a round must not depend on what ran before it
    theta0 = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    head = str(tmp_path / "head_before_round_2.safetensors")
    session.trainer.save_head(head)
    session.train(theta0, current_round=3)  # this long-lived session has trained other rounds since
    session.trainer.load_head(head)
    in_long_lived, _, _ = session.train(theta0, current_round=2)
    fresh = SiteSession("site-1", str(tmp_path / "fresh"), minilm_path, DATA, LoraSettings(), SETTINGS)
    fresh.trainer.load_head(head)
    in_fresh, _, _ = fresh.train(theta0, current_round=2)
    for n in theta0:
        np.testing.assert_allclose(in_fresh[n], in_long_lived[n], rtol=0, atol=1e-6)


def test_round_evaluations_use_a_fixed_subset_and_the_final_one_all(session):
    trainer = session.trainer
    subset = trainer.eval_subset(5)
    assert len(subset) == 5 and len(set(subset)) == 5 and all(0 <= i < 16 for i in subset)
    assert subset == trainer.eval_subset(5), "the subset must be the same every round"
    assert trainer.eval_subset(None) is None and trainer.eval_subset(16) is None
    with torch.no_grad():
        logits = trainer.model(*trainer._test.batch(subset)[:2])
    expected = float((logits.argmax(-1) == trainer._test.labels[subset]).float().mean())
    assert trainer.evaluate(subset) == pytest.approx(expected)
    with pytest.raises(ValueError, match="round_eval_examples"):
        TrainSettings(round_eval_examples=0)
