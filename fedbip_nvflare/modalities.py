"""Modalities: what a site trains (text classifier, image classifier, causal LM), chosen by configuration.

One job, one executor, one controller: the ``modality`` option names an entry of :data:`MODALITIES`, which joins the
modality's three halves, each a typed registry of its own layer: the bare backbone and default LoRA targets
(:data:`fedbip_nvflare.models.backbones.BACKBONES`, all the server needs), the site data configuration
(:data:`fedbip_nvflare.data.site_data.SITE_DATA`) and the site trainer
(:data:`fedbip_nvflare.client.trainers.TRAINERS`). Heavy libraries such as transformers are imported inside the
functions that use them.
"""

import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Tuple, Type

from torch import nn

from fedbip_nvflare.client.trainer_base import SiteTrainer
from fedbip_nvflare.client.trainers import TRAINERS
from fedbip_nvflare.data.site_data import load_task_data
from fedbip_nvflare.models.backbones import BACKBONES, DEFAULT_MODALITY, BackboneBuilder, get_backbone

__all__ = [
    "DEFAULT_MODALITY",
    "MODALITIES",
    "Modality",
    "build_backbone",
    "default_targets",
    "get_modality",
    "load_modality_data",
    "trainer_class",
]


@dataclass(frozen=True)
class Modality:
    """One modality's parts.

    Attributes:
        name: The modality's name (the ``modality`` option).
        trainer: The site trainer class.
        load_data: ``(data_config, site_name) -> task data`` for the site's data configuration.
        backbone: ``(model_path) -> (module, head feature size)``: the bare module LoRA wraps, built from the
            model's configuration (called on torch's meta device to get θ̄⁰'s names and shapes on the server).
        default_targets: LoRA target modules when the job names none.
        default_model: Model id of the offline default (used by jobs and benchmarks, never implied by the recipe).
    """

    name: str
    trainer: Type[SiteTrainer]
    load_data: Callable[[Mapping[str, Any], str], Any]
    backbone: BackboneBuilder
    default_targets: Tuple[str, ...]
    default_model: str


def _modality(name: str) -> Modality:
    backbone = BACKBONES[name]
    return Modality(
        name=name,
        trainer=TRAINERS[name],
        load_data=functools.partial(load_task_data, modality=name),
        backbone=backbone.build,
        default_targets=backbone.default_targets,
        default_model=backbone.default_model,
    )


MODALITIES: Dict[str, Modality] = {name: _modality(name) for name in BACKBONES}


def get_modality(name: str) -> Modality:
    """The modality called ``name``.

    Raises:
        ValueError: Unknown modality (the message lists the known ones).
    """
    get_backbone(name)  # raises for an unknown modality
    return MODALITIES[name]


def trainer_class(name: str) -> Type[SiteTrainer]:
    """The site trainer class of modality ``name``."""
    return get_modality(name).trainer


def load_modality_data(name: str, data: Mapping[str, Any], site_name: str) -> Any:
    """Loads a site's task data with modality ``name``'s loader (see :class:`Modality`)."""
    return get_modality(name).load_data(data, site_name)


def build_backbone(name: str, model_path: str) -> Tuple[nn.Module, int]:
    """Modality ``name``'s bare backbone for ``model_path`` and its head feature size (see :class:`Modality`)."""
    return get_modality(name).backbone(model_path)


def default_targets(name: str) -> Tuple[str, ...]:
    """The LoRA target modules of modality ``name`` when a job names none."""
    return get_modality(name).default_targets
