"""Recipe-API front of FedBip."""

from fedbip_nvflare.recipes.dropin import add_fedbip_personalization
from fedbip_nvflare.recipes.fedbip import FedBipRecipe, allow_fedbip_components

__all__ = ["FedBipRecipe", "add_fedbip_personalization", "allow_fedbip_components"]
