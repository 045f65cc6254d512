"""FedBip Client API training script (bring-your-own-code jobs and external-process launch).

It uses the same library as ``FedBipExecutor``; ``FedBipRecipe(client_mode="client_api")`` ships it with
the job and passes its settings as ``--config '<json>'`` (the executor's constructor arguments).
"""

import argparse
import json
import os

import nvflare.client as flare
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from fedbip_nvflare.client import SiteSession, TrainSettings
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.models import LoraSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="JSON of the FedBipExecutor arguments")
    parser.add_argument("--state-dir", default=None, help="site folder for the private head and final adapter")
    args = parser.parse_args()
    cfg = json.loads(args.config)

    flare.init()
    site = flare.get_site_name()
    state_dir = args.state_dir or os.path.join(os.getcwd(), K.STATE_DIR, site)
    lora = LoraSettings(cfg["lora_r"], cfg["lora_alpha"], cfg["lora_dropout"], tuple(cfg["target_modules"]))
    settings = TrainSettings(
        local_epochs=cfg["local_epochs"], batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"],
        head_learning_rate=cfg["head_learning_rate"], max_length=cfg["max_length"],
        num_threads=cfg.get("num_threads"), seed=cfg["seed"],
    )
    session = SiteSession(site, state_dir, cfg["model"], cfg["data"], lora, settings)

    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        task = flare.get_task_name()
        if task == K.TRAIN_TASK:
            params, metrics, meta = session.train(received.params, int(received.current_round or 0))
            meta[FLMetaKey.NUM_STEPS_CURRENT_ROUND] = int(metrics[K.N_EXAMPLES])
            flare.send(FLModel(params=params, params_type=ParamsType.FULL, metrics=metrics, meta=meta,
                               current_round=received.current_round))
        elif task == K.VALIDATE_TASK:
            metrics, meta = session.validate(received.params)
            flare.send(FLModel(metrics=metrics, meta=meta, current_round=received.current_round))
        else:
            raise RuntimeError(f"unknown task {task!r}")


if __name__ == "__main__":
    main()
