"""The modality registry: lookup, errors, and the text modality's parts."""

import pytest
import torch

from fedbip_nvflare.client.trainer import TextSiteTrainer
from fedbip_nvflare.modalities import (
    MODALITIES,
    build_backbone,
    default_targets,
    get_modality,
    load_modality_data,
    trainer_class,
)
from fedbip_nvflare.models import DEFAULT_TEXT_TARGETS, LoraSettings, adapter_shapes
from fedbip_nvflare.recipes import FedBipRecipe


def test_unknown_modality_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown modality 'audio'; valid modalities: \[.*'text'"):
        get_modality("audio")
    with pytest.raises(ValueError, match="unknown modality"):
        FedBipRecipe(modality="audio")


def test_every_modality_resolves_its_parts():
    for name, modality in MODALITIES.items():
        assert modality.name == name
        assert modality.default_targets
        for part in (modality.trainer, modality.load_data, modality.backbone):
            part = getattr(part, "func", part)  # load_data: the one data dispatcher, bound to the modality
            assert part.__module__.startswith("fedbip_nvflare.") and part.__name__, part


def test_text_modality_parts(minilm_path):
    assert trainer_class("text") is TextSiteTrainer
    assert default_targets("text") == DEFAULT_TEXT_TARGETS
    data = load_modality_data("text", {"suite": "text-tasks", "n_train": 4, "n_test": 4}, "site-2")
    assert len(data.train.texts) == 4 and data.task
    with torch.device("meta"):
        backbone, features = build_backbone("text", minilm_path)
    assert features == 384 and next(backbone.parameters()).device.type == "meta"


def test_lora_targets_that_match_nothing_fail_clearly(minilm_path):
    with pytest.raises(ValueError, match=r"LoRA target modules \['q_proj'\] do not match modules"):
        adapter_shapes(minilm_path, LoraSettings(target_modules=("q_proj",)))


def test_recipe_uses_the_modality_default_targets():
    recipe = FedBipRecipe(name="fb_targets")
    assert recipe.target_modules == list(DEFAULT_TEXT_TARGETS) and recipe.modality == "text"
    assert FedBipRecipe(name="fb_targets2", target_modules=["query"]).target_modules == ["query"]
