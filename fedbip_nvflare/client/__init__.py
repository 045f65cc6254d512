"""Client side of FedBip: local LoRA fine-tuning library and the NVFlare executor."""

from fedbip_nvflare.client.causal_lm import CausalLMSiteTrainer
from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.client.site import SiteSession, load_task_data
from fedbip_nvflare.client.trainer import TextSiteTrainer
from fedbip_nvflare.client.vision import ImageSiteTrainer

__all__ = [
    "CausalLMSiteTrainer",
    "ImageSiteTrainer",
    "SiteSession",
    "TextSiteTrainer",
    "TrainSettings",
    "load_task_data",
]
