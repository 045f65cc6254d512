"""FedBip's Client API training script for a bring-your-own-code job: copy it into your job's ``custom/`` folder.

The logic is the installed package's (:mod:`fedbip_nvflare.client.fedbip_client`, which ``FedBipRecipe`` ships
itself); this script only runs it, passing its own path, from which the script finds the site's workspace.
Run ``python fedbip_client.py --help`` for its flags.
"""

from fedbip_nvflare.client.fedbip_client import main

if __name__ == "__main__":
    main(__file__)
