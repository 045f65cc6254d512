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
SENT_FILE = "sent.jsonl"


class ReceivedModelLog(Filter):
    """Client TASK_DATA filter that appends a fingerprint of every received model to the site's run folder.

    Each line of ``<site run dir>/fedbip/received.jsonl`` is ``{"site", "task", "round", "digest", "tensors",
    "format"}``: the digest is :func:`fedbip_nvflare.core.params_digest` of the received weights, the format
    ``torch`` or ``numpy`` (the container they arrived in); the task passes unchanged.
    A site admin adds it to audit what the server sent (nothing but fingerprints is stored). As a client output
    filter with ``file_name=SENT_FILE`` it records what the site sent back instead.

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


def received_model_problems(
    server_run_dir: str, site_run_dirs: Mapping[str, str], rounds: int, first_round: int = 0
) -> List[str]:
    """Checks that every model each site received across a job was that site's own, and only that.

    The server must have run with ``log_updates=True`` (it keeps what it sent every round) and every site with
    :class:`ReceivedModelLog`. Each site must have received exactly one train task per round and one validate task,
    with the digest of its own θ̄_i; after round 0 (where all sites share θ̄⁰) it must match no other site's.

    Args:
        server_run_dir: The server's run folder of the job (holds ``fedbip/updates`` and ``fedbip/state``).
        site_run_dirs: ``{site: the site's run folder of the job}``.
        rounds: Number of rounds the job ran.
        first_round: The job's first round (a job resumed from a saved state starts after round 0).

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
            for r in range(first_round, rounds)
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


def _short(digest: Optional[str]) -> str:
    return digest[:12] if digest else "-" * 12


def exchange_log(server_run_dir: str, site_run_dirs: Mapping[str, str], server: str = "server") -> List[str]:
    """Who sent what to whom in a job, by digest, each model as both of its ends recorded it.

    One line per model that travelled: the server's train task to a site (its ``sent_`` file of the round against
    the site's :class:`ReceivedModelLog`), the site's result back (the site's ``SENT_FILE`` log against the
    server's ``returned_`` file) and the final validate task (the server's saved θ̄_i against the site's log), e.g.
    ``round 1 train    server -> site-2   3f2a9c01b7e4  site-2 logged 3f2a9c01b7e4: same``. A missing record shows
    as dashes and ``no record``, so a model lost in transit (a crashed site) is visible.

    Args:
        server_run_dir: The server's run folder of the job (``log_updates=True``).
        site_run_dirs: ``{site: the site's run folder of the job}``.
        server: The server's name in the lines.

    Returns:
        The lines, by round, task and site.
    """
    from safetensors.torch import load_file

    updates = os.path.join(server_run_dir, K.STATE_DIR, UPDATES_DIR)
    state_dir = os.path.join(server_run_dir, K.STATE_DIR, "state")
    last, final = -1, {}
    if os.path.isdir(state_dir):
        last, _, final, _ = ClientStateStore(state_dir).load()

    def stored(rnd: int, prefix: str, site: str) -> Optional[str]:
        path = os.path.join(updates, f"round_{rnd:03d}", prefix + ClientStateStore.file_name(site))
        return params_digest(load_file(path)) if os.path.exists(path) else None

    def logged(run_dir: str, file_name: str) -> Dict[Tuple[str, int], str]:
        if not os.path.exists(os.path.join(run_dir, K.STATE_DIR, file_name)):
            return {}
        return {(e["task"], e["round"]): e["digest"] for e in received_log(run_dir, file_name)}

    rounds = sorted(int(d.split("_")[1]) for d in os.listdir(updates)) if os.path.isdir(updates) else []
    rows = []
    for site, run_dir in site_run_dirs.items():
        got, sent = logged(run_dir, RECEIVED_FILE), logged(run_dir, SENT_FILE)
        keys = {(K.TRAIN_TASK, r) for r in rounds} | set(got) | set(sent)
        if site in final:
            keys.add((K.VALIDATE_TASK, last + 1))
        for task, rnd in keys:
            if task == K.VALIDATE_TASK:
                down = final.get(site) and params_digest(final[site])
            else:
                down = stored(rnd, "sent_", site)
            rows.append((rnd, task, site, 0, server, site, down, f"{site} logged", got.get((task, rnd))))
            if task == K.TRAIN_TASK:
                up = stored(rnd, "returned_", site)
                rows.append((rnd, task, site, 1, site, server, sent.get((task, rnd)), f"{server} stored", up))
    lines = []
    for rnd, task, _, _, source, target, digest, other_end, other in sorted(rows):
        verdict = "same" if digest and digest == other else "DIFFERENT" if digest and other else "no record"
        route = f"{source:>13} -> {target:<13}"
        lines.append(f"round {rnd} {task:<8} {route} {_short(digest)}  {other_end} {_short(other)}: {verdict}")
    return lines
