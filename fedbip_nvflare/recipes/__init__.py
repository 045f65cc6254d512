"""Recipe-API front of FedBip."""

from fedbip_nvflare.recipes.fedbip import FedBipRecipe, allow_fedbip_components

__all__ = ["FedBipRecipe", "allow_fedbip_components"]
