"""ReceivedModelLog: a site-side record of every model the site received (for audits and privacy tests)."""

import json
import os
import threading
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import params_digest
from fedbip_nvflare.state_files import UPDATES_DIR, ClientStateStore

RECEIVED_FILE = "received.jsonl"


class ReceivedModelLog(Filter):
    """Client TASK_DATA filter that appends a fingerprint of every received model to the site's run folder.

    Each line of ``<site run dir>/fedbip/received.jsonl`` is ``{"site", "task", "round", "digest", "tensors",
    "format"}``: the digest is :func:`fedbip_nvflare.core.params_digest` of the received weights, the format
    ``torch`` or ``numpy`` (the container they arrived in); the task passes unchanged.
    A site admin adds it to audit what the server sent (nothing but fingerprints is stored).

    Args:
        file_name: Name of the log file in ``<run dir>/fedbip``.
    """

    def __init__(self, file_name: str = RECEIVED_FILE):
        super().__init__()
        self.file_name = file_name
        self._lock = threading.Lock()

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            return shareable  # a task without a model
        if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF) or not dxo.data:
            return shareable
        rnd: Optional[int] = shareable.get_header(AppConstants.CURRENT_ROUND)
        entry = {
            "site": fl_ctx.get_identity_name(),
            "task": fl_ctx.get_prop(FLContextKey.TASK_NAME) or shareable.get_header(ReservedKey.TASK_NAME),
            "round": None if rnd is None else int(rnd),
            "digest": params_digest(dxo.data),
            "tensors": len(dxo.data),
            "format": "torch" if any(isinstance(v, torch.Tensor) for v in dxo.data.values()) else "numpy",
        }
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
        folder = os.path.join(run_dir, K.STATE_DIR)
        with self._lock:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, self.file_name), "a") as f:
                f.write(json.dumps(entry) + "\n")
        return shareable


def received_log(site_run_dir: str, file_name: str = RECEIVED_FILE) -> List[dict]:
    """The entries a site's :class:`ReceivedModelLog` wrote during a job (``<site run dir>/fedbip/<file_name>``)."""
    with open(os.path.join(site_run_dir, K.STATE_DIR, file_name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def received_model_problems(server_run_dir: str, site_run_dirs: Mapping[str, str], rounds: int) -> List[str]:
    """Checks that every model each site received across a job was that site's own, and only that.

    The server must have run with ``log_updates=True`` (it keeps what it sent every round) and every site with
    :class:`ReceivedModelLog`. Each site must have received exactly one train task per round and one validate task,
    with the digest of its own θ̄_i; after round 0 (where all sites share θ̄⁰) it must match no other site's.

    Args:
        server_run_dir: The server's run folder of the job (holds ``fedbip/updates`` and ``fedbip/state``).
        site_run_dirs: ``{site: the site's run folder of the job}``.
        rounds: Number of rounds the job ran.

    Returns:
        The problems found (empty when every site received only its own models).
    """
    from safetensors.torch import load_file

    _, _, final, _ = ClientStateStore(os.path.join(server_run_dir, K.STATE_DIR, "state")).load()
    updates = os.path.join(server_run_dir, K.STATE_DIR, UPDATES_DIR)
    own: Dict[str, Dict[Tuple[str, int], str]] = {}
    for site in site_run_dirs:
        sent = {
            (K.TRAIN_TASK, r): params_digest(
                load_file(os.path.join(updates, f"round_{r:03d}", "sent_" + ClientStateStore.file_name(site)))
            )
            for r in range(rounds)
        }
        own[site] = {**sent, (K.VALIDATE_TASK, rounds): params_digest(final[site])}
    problems = []
    for site, run_dir in site_run_dirs.items():
        entries = received_log(run_dir)
        got = sorted((e["task"], e["round"]) for e in entries)
        if got != sorted(own[site]):
            problems.append(f"{site} received tasks {got}, expected {sorted(own[site])}")
        for e in entries:
            key = (e["task"], e["round"])
            if e["site"] != site or e["digest"] != own[site].get(key):
                problems.append(f"{site} received a model that is not its own at {key}")
            elif key[1] > 0 and any(e["digest"] == own[other].get(key) for other in site_run_dirs if other != site):
                problems.append(f"{site}'s model at {key} equals another site's")
    return problems
