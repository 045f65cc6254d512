"""The vision site trainer on the real MobileNetV2 and real suite images, and on a tiny HF ViT built from a config."""

import json
import os

import numpy as np
import pytest
import torch

from fedbip_nvflare import assets
from fedbip_nvflare.client import TrainSettings
from fedbip_nvflare.client.vision import ImageSiteTrainer
from fedbip_nvflare.core.grouping import layer_group
from fedbip_nvflare.data.site_data import load_image_task_data
from fedbip_nvflare.modalities import build_backbone, default_targets, trainer_class
from fedbip_nvflare.models import LoraSettings, adapter_shapes, initial_adapter
from fedbip_nvflare.models.vision import build_image_classifier, load_vision_backbone

MODEL = "torchvision/mobilenet_v2"
DATA = {"suite": "vision-domains", "n_train": 48, "n_test": 40, "seed": 0, "image_size": 32}
SETTINGS = TrainSettings(batch_size=16, num_threads=1, local_epochs=2)
LORA = LoraSettings(target_modules=default_targets("vision"))


@pytest.fixture(scope="module")
def trainer() -> ImageSiteTrainer:
    if assets.model_path(MODEL) is None:
        pytest.fail("offline MobileNetV2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    return trainer_class("vision")(MODEL, load_image_task_data(DATA, "site-4"), LORA, SETTINGS)


def test_server_adapter_shapes_equal_the_trainers(trainer):
    local = {n: tuple(t.shape) for n, t in trainer.get_federated().items()}
    assert adapter_shapes(MODEL, LORA, modality="vision") == local
    assert list(initial_adapter(MODEL, LORA, seed=0, modality="vision")) == trainer.federated_names
    assert len(local) == 2 * 34, "A and B of each of MobileNetV2's 34 pointwise convolutions"
    with_head = adapter_shapes(MODEL, LORA, head_labels=5, modality="vision")
    assert with_head["head.weight"] == tuple(trainer.model.head.weight.shape) == (5, 1280)


def test_layer_groups_are_the_networks_blocks(trainer):
    groups = {layer_group(n) for n in trainer.federated_names}
    assert groups == {f"base_model.model.features.{k}." for k in range(1, 19)}


def test_backbone_on_meta_device_is_the_module_lora_wraps(trainer):
    with torch.device("meta"):
        module, features = build_backbone("vision", MODEL)
    assert features == 1280
    assert type(module) is type(trainer.model.backbone.get_base_model())
    assert all(p.device.type == "meta" for p in module.parameters())


def test_training_adapts_lora_and_head_keeps_batchnorm_and_learns(trainer):
    bn_before = {n: b.clone() for n, b in trainer.model.backbone.named_buffers() if "running" in n}
    before = trainer.get_federated()
    head_before = trainer.model.head_state()
    acc_before = trainer.evaluate()
    metrics = trainer.train(round_index=0)
    assert metrics["n_examples"] == 48 and np.isfinite(metrics["train_loss"])
    after = trainer.get_federated()
    assert all(not torch.equal(before[n], after[n]) for n in after if ".lora_B." in n)
    assert not torch.equal(head_before["head.weight"], trainer.model.head_state()["head.weight"])
    for n, b in trainer.model.backbone.named_buffers():
        if n in bn_before:
            assert torch.equal(b, bn_before[n]), f"{n}: BatchNorm statistics are frozen"
    acc_after = trainer.evaluate()
    assert acc_after > max(acc_before, 0.2) + 0.15, (acc_before, acc_after)  # 5 classes: chance 0.2
    subset = trainer.eval_subset(10)
    assert len(subset) == 10 and 0.0 <= trainer.evaluate(subset) <= 1.0


def test_personalized_adapter_loads_with_peft_and_predicts_the_same(trainer, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    directory = trainer.save_personalized(str(tmp_path / "adapter"))
    with open(f"{directory}/labels.json") as f:
        labels = json.load(f)
    assert labels["label_names"] == ["0", "1", "2", "3", "4"] and labels["base_model"] == MODEL
    assert labels["image_size"] == 32 and labels["mean"] == [0.485, 0.456, 0.406]
    backbone, _ = load_vision_backbone(labels["base_model"])
    peft_model = PeftModel.from_pretrained(backbone, directory).eval()
    head = load_file(f"{directory}/head.safetensors")
    x, _ = trainer._batch(trainer._test, list(range(8)))
    with torch.no_grad():
        loaded = peft_model.get_base_model().forward_features(x) @ head["head.weight"].T + head["head.bias"]
        trainer.model.eval()
        assert torch.allclose(loaded, trainer.model(x), atol=1e-5)


def test_set_federated_roundtrip_and_mismatch(trainer):
    params = {n: t.numpy() + 0.01 for n, t in trainer.get_federated().items()}
    trainer.set_federated(params)
    assert all(np.allclose(trainer.get_federated()[n].numpy(), params[n]) for n in params)
    with pytest.raises(ValueError, match="do not match"):
        trainer.set_federated({n: v for n, v in list(params.items())[1:]})


def test_bad_lora_targets_and_labels_are_clear_errors():
    with pytest.raises(ValueError, match="do not match modules of"):
        build_image_classifier(MODEL, 3, LoraSettings(target_modules=("no_such_layer",)))
    with pytest.raises(ValueError, match="at least 2 labels"):
        build_image_classifier(MODEL, 1, LORA)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_image_classifier("/no/such/model", 3, LORA)


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> str:
    """A small random ViT saved as an HF folder (config, weights, image processor): the HF code path."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = str(tmp_path_factory.mktemp("vit"))
    config = ViTConfig(
        image_size=24, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], size={"height": 24, "width": 24}
    ).save_pretrained(folder)
    return folder


def test_hf_vit_backbone_shapes_training_and_input_size(tiny_vit, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), y=[0, 1, 2] * 8)
    data = load_image_task_data({"train_path": str(tmp_path / "d.npz"), "image_size": 16}, "site-1")
    vit = ImageSiteTrainer(tiny_vit, data, LORA, TrainSettings(batch_size=8, num_threads=1))
    local = {n: tuple(t.shape) for n, t in vit.get_federated().items()}
    assert adapter_shapes(tiny_vit, LORA, modality="vision") == local
    assert {n.split(".")[-3] for n in local} == {"q_proj", "v_proj"}, "the default targets match ViT's attention"
    assert {layer_group(n) for n in local} == {f"base_model.model.layers.{k}." for k in range(2)}
    assert vit.image_input.mean == (0.5, 0.5, 0.5) and vit.image_input.image_size == 24
    x, _ = vit._batch(vit._test, [0, 1])
    assert x.shape == (2, 3, 24, 24), "images are resized to the ViT's fixed input size"
    before = vit.get_federated()
    assert np.isfinite(vit.train()["train_loss"])
    assert any(not torch.equal(before[n], t) for n, t in vit.get_federated().items())
    assert vit.model.head.in_features == 32


def test_a_checkpoint_file_or_folder_is_the_same_backbone():
    folder = assets.model_path(MODEL)
    by_id = adapter_shapes(MODEL, LORA, modality="vision")
    assert adapter_shapes(folder, LORA, modality="vision") == by_id
    assert adapter_shapes(f"{folder}/mobilenet_v2-b0353104.pth", LORA, modality="vision") == by_id


def test_gradient_checkpointing_is_refused_clearly_for_mobilenet():
    data = load_image_task_data({**DATA, "n_train": 4, "n_test": 4}, "site-6")
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        ImageSiteTrainer(MODEL, data, LORA, TrainSettings(num_threads=1, gradient_checkpointing=True))


def test_fedbip_predict_labels_image_files_like_the_site_model(trainer, tmp_path, capsys):
    from PIL import Image

    from fedbip_nvflare.cli import main
    from fedbip_nvflare.predict_images import image_files, is_image_classifier, predict_images

    directory = trainer.save_personalized(str(tmp_path / "adapter"))
    assert is_image_classifier(directory)
    images = tmp_path / "images"
    for i in range(6):  # 32 px PNGs: read back at the saved image_size, the pixels are the site's own
        (images / ("sub" if i % 2 else "")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(trainer._test.images[i]).save(images / ("sub" if i % 2 else "") / f"img{i}.png")
    rows = predict_images(directory, str(images))
    order = [int(os.path.basename(r["image"])[3:-4]) for r in rows]
    assert sorted(order) == list(range(6)) and [r["image"] for r in rows] == image_files(str(images))
    x, _ = trainer._batch(trainer._test, order)
    trainer.model.eval()
    with torch.no_grad():
        probs = torch.softmax(trainer.model(x), dim=-1)
    expected = [trainer.data.label_names[int(k)] for k in probs.argmax(dim=-1)]
    assert [r["label"] for r in rows] == expected
    assert [r["score"] for r in rows] == pytest.approx(probs.max(dim=-1).values.tolist(), abs=1e-5)

    out = tmp_path / "labels.csv"
    assert main(["predict", "--adapter", directory, "--input", str(images), "--output", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "image,label,score" and len(out.read_text().splitlines()) == 7
    (images / "notes.png").write_text("not an image")
    assert main(["predict", "--adapter", directory, "--input", str(images)]) == 1
    assert "notes.png: not a readable image" in capsys.readouterr().out
