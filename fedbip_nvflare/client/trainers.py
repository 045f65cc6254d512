"""The site trainer of every modality (the client-side half of :data:`fedbip_nvflare.modalities.MODALITIES`)."""

from typing import Dict, Type

from fedbip_nvflare.client.causal_lm import CausalLMSiteTrainer
from fedbip_nvflare.client.trainer import TextSiteTrainer
from fedbip_nvflare.client.trainer_base import SiteTrainer
from fedbip_nvflare.client.vision import ImageSiteTrainer

TRAINERS: Dict[str, Type[SiteTrainer]] = {
    "text": TextSiteTrainer,
    "vision": ImageSiteTrainer,
    "causal-lm": CausalLMSiteTrainer,
}
"""``{modality: site trainer class}``; the keys are the modality names."""
