"""A site's own configuration: ``<site workspace>/local/fedbip_site.json`` overrides the job's data and resources.

:func:`apply_site_config` is the one reader, for the executor (which gets the site's ``local/`` folder from its
NVFlare workspace) and the Client API script (which finds its workspace with :func:`app_workspace`).
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

from nvflare.apis.workspace import Workspace

from fedbip_nvflare.client.settings import TrainSettings

SITE_CONFIG_FILE = "fedbip_site.json"
SITE_CONFIG_KEYS = ("data", "num_threads", "batch_size", "local_epochs")


def apply_site_config(
    local_dir: str, data: Dict[str, Any], settings: TrainSettings
) -> Tuple[Dict[str, Any], TrainSettings, Optional[str]]:
    """The job's data and settings, overridden by the site's ``<local_dir>/fedbip_site.json`` if it exists.

    The file is a JSON object with any of ``data`` (the site's data configuration, e.g.
    ``{"train_path": "/data/train.csv", "test_path": "/data/test.csv"}``; it replaces the job's), ``num_threads``,
    ``batch_size`` and ``local_epochs``.

    Returns:
        ``(data, settings, path of the file or None)``.

    Raises:
        ValueError: The file is not valid JSON, or has unknown keys or bad values (naming them).
    """
    path = os.path.join(local_dir, SITE_CONFIG_FILE)
    if not os.path.exists(path):
        return data, settings, None
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object with keys among {list(SITE_CONFIG_KEYS)}")
    unknown = sorted(set(config) - set(SITE_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{path} has unknown keys {unknown}; allowed: {list(SITE_CONFIG_KEYS)}")
    site_data = config.get("data", data)
    if not isinstance(site_data, dict):
        raise ValueError(f"{path}: 'data' must be a data configuration object, got {site_data!r}")
    overrides = {k: config[k] for k in SITE_CONFIG_KEYS if k != "data" and k in config}
    return dict(site_data), dataclasses.replace(settings, **overrides), path


def app_workspace(app_dir: str, job_id: str, site: str) -> Optional[Workspace]:
    """The NVFlare workspace of ``site`` in which ``app_dir`` is the app folder of job ``job_id``, if it is one.

    NVFlare deploys a job's app for a site to ``<workspace>/<job id>/app_<site>`` (startup kits, POC and the
    simulator's ``<workspace>/<site>/simulate_job/app_<site>`` alike), and the site's ``local/`` and ``startup/``
    folders sit beside the job folders; a Client API script, told only its job id and site name, finds its site's
    workspace from where NVFlare put its app.

    Args:
        app_dir: The app folder (the parent of the script's ``custom/`` folder).
        job_id: The job id (``flare.get_job_id()``).
        site: The site name (``flare.get_site_name()``).

    Returns:
        The workspace, or None where ``app_dir`` is not so laid out (e.g. the script run by hand).
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(app_dir)))
    try:
        workspace = Workspace(root_dir=root, site_name=site)
    except (ValueError, RuntimeError):  # no site workspace there (missing startup/ or local/ folder)
        return None
    if os.path.realpath(workspace.get_app_dir(job_id)) != os.path.realpath(app_dir):
        return None
    return workspace
