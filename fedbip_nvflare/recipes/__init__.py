"""Recipe-API front of FedBip."""

from fedbip_nvflare.recipes.dropin import add_fedbip_personalization
from fedbip_nvflare.recipes.fedbip import FedBipRecipe, allow_fedbip_components
from fedbip_nvflare.recipes.poc import AllowListBuilder, fedbip_poc_env, write_poc_project

__all__ = [
    "AllowListBuilder",
    "FedBipRecipe",
    "add_fedbip_personalization",
    "allow_fedbip_components",
    "fedbip_poc_env",
    "write_poc_project",
]
