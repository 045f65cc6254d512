"""FedBip for NVIDIA FLARE: bi-level personalized federated fine-tuning of foundation models."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["add_fedbip_personalization"]


def __getattr__(name: str) -> Any:
    # NVFlare is imported only when the drop-in helper is used, so `import fedbip_nvflare.core` stays light.
    if name == "add_fedbip_personalization":
        from fedbip_nvflare.recipes.dropin import add_fedbip_personalization

        return add_fedbip_personalization
    raise AttributeError(f"module 'fedbip_nvflare' has no attribute {name!r}")
