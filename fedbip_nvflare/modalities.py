"""Modalities: what a site trains (text classifier, image classifier, causal LM), chosen by configuration.

One job, one executor, one controller: the ``modality`` option names an entry of :data:`MODALITIES`, which says
where the modality's site trainer, data loader and bare backbone live, as ``"module:attribute"`` paths resolved when
used (the registry stays a declaration; heavy libraries such as transformers are imported inside the functions).
"""

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Tuple

from torch import nn

from fedbip_nvflare.models.causal_lm import DEFAULT_CAUSAL_LM, DEFAULT_CAUSAL_LM_TARGETS
from fedbip_nvflare.models.lora import DEFAULT_TEXT_TARGETS
from fedbip_nvflare.models.vision import DEFAULT_VISION_MODEL, DEFAULT_VISION_TARGETS

DEFAULT_MODALITY = "text"


@dataclass(frozen=True)
class Modality:
    """Where one modality's parts live (``"module:attribute"`` paths, imported lazily).

    Attributes:
        name: The modality's name (the ``modality`` option).
        trainer: The site trainer class, a ``fedbip_nvflare.client.trainer.SiteTrainer`` subclass.
        load_data: ``(data_config, site_name) -> task data`` for the site's data configuration.
        backbone: ``(model_path) -> (module, head feature size)``: the bare module LoRA wraps, built from the
            model's configuration (called on torch's meta device to get θ̄⁰'s names and shapes on the server).
        default_targets: LoRA target modules when the job names none.
        default_model: Model id of the offline default (used by jobs and benchmarks, never implied by the recipe).
    """

    name: str
    trainer: str
    load_data: str
    backbone: str
    default_targets: Tuple[str, ...]
    default_model: str


MODALITIES: Dict[str, Modality] = {
    "text": Modality(
        name="text",
        trainer="fedbip_nvflare.client.trainer:TextSiteTrainer",
        load_data="fedbip_nvflare.client.site:load_task_data",
        backbone="fedbip_nvflare.models.text:text_backbone",
        default_targets=DEFAULT_TEXT_TARGETS,
        default_model="sentence-transformers/all-MiniLM-L6-v2",
    ),
    "vision": Modality(
        name="vision",
        trainer="fedbip_nvflare.client.vision:ImageSiteTrainer",
        load_data="fedbip_nvflare.data.images:load_image_task_data",
        backbone="fedbip_nvflare.models.vision:vision_backbone",
        default_targets=DEFAULT_VISION_TARGETS,  # MobileNetV2's 1x1 convolutions and ViT's query/value
        default_model=DEFAULT_VISION_MODEL,
    ),
    "causal-lm": Modality(
        name="causal-lm",
        trainer="fedbip_nvflare.client.causal_lm:CausalLMSiteTrainer",
        load_data="fedbip_nvflare.data.instruct:load_instruct_task_data",
        backbone="fedbip_nvflare.models.causal_lm:causal_lm_backbone",
        default_targets=DEFAULT_CAUSAL_LM_TARGETS,
        default_model=DEFAULT_CAUSAL_LM,
    ),
}


def get_modality(name: str) -> Modality:
    """The modality called ``name``.

    Raises:
        ValueError: Unknown modality (the message lists the known ones).
    """
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; valid modalities: {sorted(MODALITIES)}")
    return MODALITIES[name]


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def trainer_class(name: str) -> type:
    """The site trainer class of modality ``name``."""
    return _resolve(get_modality(name).trainer)


def load_modality_data(name: str, data: Mapping[str, Any], site_name: str) -> Any:
    """Loads a site's task data with modality ``name``'s loader (see :class:`Modality`)."""
    loader: Callable[[Mapping[str, Any], str], Any] = _resolve(get_modality(name).load_data)
    return loader(data, site_name)


def build_backbone(name: str, model_path: str) -> Tuple[nn.Module, int]:
    """Modality ``name``'s bare backbone for ``model_path`` and its head feature size (see :class:`Modality`)."""
    return _resolve(get_modality(name).backbone)(model_path)


def default_targets(name: str) -> Tuple[str, ...]:
    """The LoRA target modules of modality ``name`` when a job names none."""
    return get_modality(name).default_targets
