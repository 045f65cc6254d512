"""FedBip Client API training script (bring-your-own-code jobs and external-process launch).

It uses the same library as ``FedBipExecutor``; ``FedBipRecipe(client_mode="client_api")`` ships this module's file
with the job as ``custom/fedbip_client.py`` (so it exists wherever the package is installed, from a wheel too) and
passes the executor's settings as flags (one per ``TrainSettings`` field, generated from it), e.g.::

    fedbip_client.py --model sentence-transformers/all-MiniLM-L6-v2 --data suite=text-tasks --data n_train=300

A bring-your-own-code job ships a script of its own that calls :func:`main` (the repository's
``custom/fedbip_client.py`` is such a script).

Like the executor, it applies the site's own ``<site workspace>/local/fedbip_site.json`` over the job's data and
resources (:func:`~fedbip_nvflare.client.site_config.apply_site_config`) and keeps its state in
``<run dir>/fedbip``; it finds the site's workspace from where NVFlare put the script it runs
(``<workspace>/<job id>/app_<site>/custom/fedbip_client.py``, in process or launched as its own process).
"""

import argparse
import logging
import os
import sys
from typing import Optional

import nvflare.client as flare
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.client.tracking import SummaryWriter

from fedbip_nvflare.client import SiteSession
from fedbip_nvflare.client.settings import add_arguments, from_arguments
from fedbip_nvflare.client.site_config import app_workspace, apply_site_config
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.exchange import in_format_of
from fedbip_nvflare.models import LoraSettings
from fedbip_nvflare.models.backbones import BACKBONES, DEFAULT_MODALITY, default_targets

logger = logging.getLogger("fedbip_client")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model id or local folder")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data configuration entry, e.g. suite=text-tasks or train_path=/data/train.csv",
    )
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--modality", default=DEFAULT_MODALITY, choices=sorted(BACKBONES), help="what the site trains")
    p.add_argument(
        "--target-modules", default=None, help="comma-separated module names (default: the modality's default)"
    )
    add_arguments(p)  # one flag per TrainSettings field (--local-epochs, --batch-size, ...)
    p.add_argument(
        "--state-dir",
        default=None,
        help="site folder for the private head and final adapter (default: <run dir>/fedbip)",
    )
    p.add_argument(
        "--site-state-root",
        default=None,
        help="folder outside the job where the site snapshots its private state per run and round, restored when "
        "the server resumes the run (default: fedbip_state in the site's workspace)",
    )
    return p.parse_args()


def _value(text: str):
    """A data value as the recipe wrote it: an int, a float, or else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_data(entries) -> dict:
    data = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep:
            raise SystemExit(f"--data expects KEY=VALUE, got {entry!r}")
        data[key] = _value(value)
    return data


def site_setup(args: argparse.Namespace, site: str, job_id: str, script: str):
    """The job's data and settings with the site's ``fedbip_site.json`` applied, the site's state folder, and the
    folder of its snapshots across jobs (``--site-state-root``, else ``fedbip_state`` in the site's workspace).

    ``script`` is the file NVFlare runs, ``<app folder>/custom/<name>`` in a site's workspace."""
    data, settings = parse_data(args.data), from_arguments(args)
    workspace = app_workspace(os.path.dirname(os.path.dirname(os.path.abspath(script))), job_id, site)
    if workspace is None:
        logger.warning("%s: %s is not in an NVFlare site workspace: no site configuration applies", site, script)
        state_dir = args.state_dir or os.path.join(os.getcwd(), K.STATE_DIR, site)
        return data, settings, state_dir, args.site_state_root or os.path.join(os.getcwd(), K.SITE_STATE_DIR)
    data, settings, source = apply_site_config(workspace.get_site_config_dir(), data, settings)
    if source:
        logger.info("%s: site configuration from %s overrides the job's data/resources", site, source)
    state_dir = args.state_dir or os.path.join(workspace.get_run_dir(job_id), K.STATE_DIR)
    return data, settings, state_dir, args.site_state_root or os.path.join(workspace.get_root_dir(), K.SITE_STATE_DIR)


def main(script: Optional[str] = None) -> None:
    """Trains and validates on the site's tasks until the job ends.

    Args:
        script: The path of the script NVFlare runs (its ``__file__``), which tells the site's workspace; default
            ``sys.argv[0]``, where NVFlare puts it in process and external process alike.
    """
    script = os.path.abspath(script or sys.argv[0])  # before anything may change the working directory
    args = parse_args()
    # launched as its own process, the script logs to stdout, which NVFlare copies into the site's log (lines without
    # a leading time stamp); in process the root logger has NVFlare's handlers already and this does nothing
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(levelname)s - %(message)s")
    flare.init()
    site = flare.get_site_name()
    data, settings, state_dir, snapshot_root = site_setup(args, site, flare.get_job_id(), script)
    targets = tuple(args.target_modules.split(",")) if args.target_modules else default_targets(args.modality)
    lora = LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, targets)
    logger.info("%s: loading model %s and data %s", site, args.model, data)
    session = SiteSession(
        site, state_dir, args.model, data, lora, settings, modality=args.modality, snapshot_root=snapshot_root
    )
    writer = SummaryWriter()  # NVFlare experiment tracking: reaches the server's receiver when the job has one

    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        task = flare.get_task_name()
        rnd = int(received.current_round or 0)
        session.begin_task((received.meta or {}).get(K.RUN_KEY), rnd)
        if task == K.TRAIN_TASK:
            params, metrics, meta = session.train(received.params, rnd)
            params = in_format_of(params, received.params)  # torch back to a job that exchanges PyTorch
            for tag, value in metrics.items():
                writer.add_scalar(tag, float(value), global_step=rnd)
            meta[FLMetaKey.NUM_STEPS_CURRENT_ROUND] = int(metrics[K.N_EXAMPLES])
            flare.send(
                FLModel(
                    params=params,
                    params_type=ParamsType.FULL,
                    metrics=metrics,
                    meta=meta,
                    current_round=received.current_round,
                )
            )
        elif task == K.VALIDATE_TASK:
            metrics, meta = session.validate(received.params)
            flare.send(FLModel(metrics=metrics, meta=meta, current_round=received.current_round))
        else:
            raise RuntimeError(f"unknown task {task!r}")


if __name__ == "__main__":  # NVFlare runs the shipped copy of this file
    main(__file__)
