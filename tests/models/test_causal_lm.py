"""Tests for the causal LM (fedbip_nvflare.models.causal_lm) and its site trainer, on the offline SmolLM2 GGUF."""

import json
import os
import shutil

import pytest
import torch

from fedbip_nvflare.client.causal_lm import GENERATION_FILE, CausalLMSiteTrainer, normalize_answer
from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.data.instruct import InstructExample, InstructSplit, InstructTaskData
from fedbip_nvflare.models import LoraSettings, adapter_shapes
from fedbip_nvflare.models.causal_lm import (
    DEFAULT_CAUSAL_LM,
    DEFAULT_CAUSAL_LM_TARGETS,
    dequantized_folder,
    loadable_source,
    locate_causal_lm,
)

LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=DEFAULT_CAUSAL_LM_TARGETS)
QUESTION = "Is the sentiment of this review positive or negative? Answer with one of: positive, negative."
REVIEWS = [
    ("A delight from start to finish.", "positive"),
    ("Dull, slow and far too long.", "negative"),
    ("The best film I have seen this year.", "positive"),
    ("I walked out after twenty minutes.", "negative"),
]


@pytest.fixture(scope="module")
def smollm2_path() -> str:
    from fedbip_nvflare import assets

    path = assets.model_path(DEFAULT_CAUSAL_LM)
    if path is None:
        pytest.fail("offline SmolLM2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    return path


@pytest.fixture(scope="module")
def trainer(smollm2_path) -> CausalLMSiteTrainer:
    examples = [InstructExample(QUESTION, answer, review) for review, answer in REVIEWS]
    data = InstructTaskData("sentiment", InstructSplit(examples), InstructSplit(examples[:3]), ["positive", "negative"])
    settings = TrainSettings(
        batch_size=2,
        max_length=64,
        num_threads=1,
        max_new_tokens=4,
        eval_batch_size=2,
        learning_rate=5e-3,
        gradient_checkpointing=True,
    )
    return CausalLMSiteTrainer(DEFAULT_CAUSAL_LM, data, LORA, settings, device="cpu")


def test_smollm2_resolves_to_the_offline_gguf(smollm2_path):
    source = locate_causal_lm(DEFAULT_CAUSAL_LM)
    assert source.path == smollm2_path and source.gguf_file.endswith(".gguf")
    direct = locate_causal_lm(os.path.join(smollm2_path, source.gguf_file))
    assert direct == source


def test_dequantized_copy_holds_the_gguf_weights_and_tokenizer(trainer, smollm2_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open
    from transformers import AutoTokenizer

    source = locate_causal_lm(DEFAULT_CAUSAL_LM)
    copy = loadable_source(source, convert=False)
    assert copy.gguf_file is None and copy.path == dequantized_folder(source), "the trainer left a dequantized copy"
    reader = GGUFReader(os.path.join(source.path, source.gguf_file))
    (tensor,) = [t for t in reader.tensors if t.name == "blk.3.attn_v.weight"]
    with safe_open(os.path.join(copy.path, "model.safetensors"), "pt") as f:
        saved = f.get_tensor("model.layers.3.self_attn.v_proj.weight")
    assert torch.equal(saved, torch.from_numpy(dequantize(tensor.data, tensor.tensor_type)))
    original = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    for text in ("### Instruction:\nSay hi.\n\n### Response:\nhi", "naïve café — “quotes” 123\n\tend"):
        assert trainer.tokenizer(text)["input_ids"] == original(text)["input_ids"]
    assert (trainer.tokenizer.eos_token, trainer.tokenizer.pad_token) == (original.eos_token, original.pad_token)


def test_causal_lm_modality_parts(smollm2_path):
    from fedbip_nvflare.modalities import build_backbone, default_targets, load_modality_data, trainer_class

    assert trainer_class("causal-lm") is CausalLMSiteTrainer
    assert default_targets("causal-lm") == DEFAULT_CAUSAL_LM_TARGETS
    with torch.device("meta"):
        backbone, features = build_backbone("causal-lm", DEFAULT_CAUSAL_LM)
    assert features == 0 and next(backbone.parameters()).device.type == "meta"
    assert backbone.config.model_type == "llama" and backbone.config.num_hidden_layers == 30
    with pytest.raises(ValueError, match=r"unknown data config keys \['image_size'\]"):
        load_modality_data("causal-lm", {"suite": "instruct-tasks", "image_size": 32}, "site-1")


def test_locate_errors(tmp_path, smollm2_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        locate_causal_lm(str(tmp_path / "missing.gguf"))
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="several GGUF files"):
        locate_causal_lm(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate_causal_lm(str(tmp_path / "no-such-folder"))


def test_model_has_no_head_and_only_lora_trains(trainer):
    assert not trainer.has_head and trainer.model.head_state() == {}
    with pytest.raises(ValueError, match="no classification head"):
        trainer.model.load_head_state({"head.weight": torch.zeros(1)})
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert all(".lora_" in n for n in trainer.federated_names)
    assert len(trainer.federated_names) == 2 * 2 * trainer.model.backbone.config.num_hidden_layers


def test_server_adapter_shapes_equal_the_sites(trainer):
    shapes = adapter_shapes(DEFAULT_CAUSAL_LM, LORA, modality="causal-lm")
    assert shapes == {n: tuple(t.shape) for n, t in trainer.get_federated().items()}
    assert list(shapes) == trainer.federated_names, "same names in the same order"
    with pytest.raises(ValueError, match="no classification head"):
        adapter_shapes(DEFAULT_CAUSAL_LM, LORA, head_labels=2, modality="causal-lm")


def test_generation_and_metrics(trainer):
    exact = trainer.evaluate()
    assert 0.0 <= exact <= 1.0
    assert sorted(trainer.predictions) == [0, 1, 2] and all(isinstance(p, str) for p in trainer.predictions.values())
    manual = sum(normalize_answer(trainer.predictions[i]) == REVIEWS[i][1] for i in range(3)) / 3
    assert exact == pytest.approx(manual)
    assert 0.0 <= trainer.extra_metrics()["rouge_l"] <= 1.0
    assert len(trainer.generate([1])[0]) > 0, "greedy generation produces text"
    assert trainer.evaluate([2]) in (0.0, 1.0) and list(trainer.predictions) == [2]


def test_left_padded_batches_generate_what_single_prompts_do(trainer):
    batched = trainer.generate([0, 1])
    assert batched == [trainer.generate([0])[0], trainer.generate([1])[0]]


def test_normalize_answer():
    assert normalize_answer("  Positive \n\nand more") == "positive"
    assert normalize_answer("\n\n") == ""


def test_gradient_checkpointing_gives_the_same_gradients(trainer):
    backbone = trainer.model.backbone
    trainer.model.train()

    def grads():
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer._batch_loss([0, 1])
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}

    assert backbone.base_model.model.model.gradient_checkpointing
    loss_ckpt, grads_ckpt = grads()
    backbone.gradient_checkpointing_disable()
    try:
        loss_plain, grads_plain = grads()
    finally:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert torch.isfinite(loss_ckpt) and torch.allclose(loss_ckpt, loss_plain)
    assert any(float(g.abs().max()) > 0 for g in grads_ckpt.values()), "gradients reach the LoRA tensors"
    for n in grads_plain:
        torch.testing.assert_close(grads_ckpt[n], grads_plain[n], rtol=1e-4, atol=1e-6)
    trainer.model.zero_grad(set_to_none=True)


def test_training_changes_lora_and_round_trips(trainer, tmp_path):
    before = trainer.get_federated()
    metrics = trainer.train(epochs=1, round_index=0)
    after = trainer.get_federated()
    assert metrics["n_examples"] == 4 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert any(not torch.equal(before[n], after[n]) for n in before if ".lora_B." in n)
    trainer.set_federated(before)
    assert all(torch.equal(trainer.get_federated()[n], before[n]) for n in before)
    with pytest.raises(ValueError, match="missing"):
        trainer.set_federated({n: t for n, t in list(before.items())[1:]})
    trainer.set_federated(after)

    directory = trainer.save_personalized(str(tmp_path / "adapter"))
    with open(os.path.join(directory, GENERATION_FILE)) as f:
        info = json.load(f)
    assert info["base_model"] == DEFAULT_CAUSAL_LM and info["gguf_file"].endswith(".gguf")
    assert "{instruction}" in info["prompt_template"] and info["task"] == "sentiment"
    assert not os.path.exists(os.path.join(directory, "head.safetensors"))
    backbone = trainer.model.backbone
    backbone.load_adapter(directory, adapter_name="reloaded")
    try:
        weights = {n: p for n, p in backbone.named_parameters() if ".reloaded." in n}
        assert len(weights) == len(after)
        for n, t in after.items():
            torch.testing.assert_close(weights[n.replace(".weight", ".reloaded.weight")].detach(), t)
    finally:
        backbone.delete_adapter("reloaded")
    shutil.rmtree(directory)


def test_bf16_keeps_the_base_in_bf16_and_lora_in_fp32(smollm2_path):
    examples = [InstructExample(QUESTION, answer, review) for review, answer in REVIEWS[:2]]
    data = InstructTaskData("sentiment", InstructSplit(examples), InstructSplit(examples[:1]), ["positive", "negative"])
    settings = TrainSettings(batch_size=2, max_length=64, num_threads=1, max_new_tokens=2, precision="bf16")
    trainer = CausalLMSiteTrainer(DEFAULT_CAUSAL_LM, data, LORA, settings, device="cpu")
    dtypes = {n: p.dtype for n, p in trainer.model.named_parameters()}
    assert {d for n, d in dtypes.items() if ".lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if ".lora_" not in n} == {torch.bfloat16}
    before = trainer.get_federated()
    metrics = trainer.train(epochs=1)
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    after = trainer.get_federated()
    assert all(t.dtype == torch.float32 for t in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert 0.0 <= trainer.evaluate() <= 1.0 and isinstance(trainer.predictions[0], str)
