"""Client side of FedBip: local LoRA fine-tuning library and the NVFlare executor.

``trainer_base`` (:class:`SiteTrainer`, the shared loop) ← ``trainer`` (text) / ``vision`` / ``causal_lm`` ←
``trainers`` (the trainer of each modality) ← ``site`` (a site across rounds) ← ``executor`` (NVFlare). ``audit``,
``privacy`` and ``faults`` are task filters and fault injection; ``settings`` holds the training options and
``site_config`` reads a site's own ``fedbip_site.json`` (executor and Client API script).
"""

from fedbip_nvflare.client.causal_lm import CausalLMSiteTrainer
from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.client.site import SiteSession, load_task_data
from fedbip_nvflare.client.trainer import TextSiteTrainer
from fedbip_nvflare.client.trainer_base import SiteTrainer
from fedbip_nvflare.client.vision import ImageSiteTrainer

__all__ = [
    "CausalLMSiteTrainer",
    "ImageSiteTrainer",
    "SiteSession",
    "SiteTrainer",
    "TextSiteTrainer",
    "TrainSettings",
    "load_task_data",
]
