"""Per-client FedBip state files (θ̄⁰ and every θ̄_i), persisted atomically with checksums, and the per-round
audit trail of what each client was sent and returned.

The server writes them (:mod:`fedbip_nvflare.server.state` re-exports this module); the received-model audit
(:mod:`fedbip_nvflare.client.audit`) and tests read them, so they live outside both ``client`` and ``server``.
"""

import hashlib
import json
import os
import re
import uuid
from typing import Dict, Mapping, Optional

import torch
from safetensors.torch import load_file, save_file

from fedbip_nvflare.constants import FedBipKeys as K

Params = Dict[str, torch.Tensor]

STATE_FILE = "state.json"
INITIAL_FILE = "theta0.safetensors"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """``text`` with every character but letters, digits, ``_``, ``.`` and ``-`` replaced by ``_`` (a file name)."""
    return _SAFE_NAME.sub("_", text)


def sha256_file(path: str) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _save_atomic(tensors: Params, path: str) -> str:
    tmp = path + ".tmp"
    save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()}, tmp)
    os.replace(tmp, path)
    return sha256_file(path)


class ClientStateStore:
    """Folder holding θ̄⁰, each client's θ̄_i (safetensors) and ``state.json`` (round, files, checksums).

    Every file is written to a temporary name and renamed; ``state.json`` is written last, so a crash
    leaves the previous complete state. :meth:`load` verifies every checksum.

    Args:
        root: The folder (created on first save).
    """

    def __init__(self, root: str):
        self.root = root

    @staticmethod
    def file_name(client: str) -> str:
        """File name of a client's parameters."""
        return "client_" + safe_name(client) + ".safetensors"

    def save(self, completed_round: int, theta0: Params, thetas: Dict[str, Params], extra: Optional[dict] = None):
        """Persists the state after ``completed_round``.

        Args:
            completed_round: Index of the last completed round.
            theta0: Initial federated parameters.
            thetas: ``{client: θ̄_i}``.
            extra: JSON-serialisable extra information stored in ``state.json``.
        """
        os.makedirs(self.root, exist_ok=True)
        files = {
            "__theta0__": {"file": INITIAL_FILE, "sha256": _save_atomic(theta0, os.path.join(self.root, INITIAL_FILE))}
        }
        for client, params in thetas.items():
            name = self.file_name(client)
            files[client] = {"file": name, "sha256": _save_atomic(params, os.path.join(self.root, name))}
        state = {"round": int(completed_round), "files": files, "extra": extra or {}}
        tmp = os.path.join(self.root, STATE_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, os.path.join(self.root, STATE_FILE))

    def exists(self) -> bool:
        """Whether a saved state exists."""
        return os.path.exists(os.path.join(self.root, STATE_FILE))

    def load(self):
        """Loads and verifies the saved state.

        Returns:
            ``(completed_round, theta0, {client: θ̄_i}, extra)``.

        Raises:
            FileNotFoundError: No state was saved here.
            ValueError: ``state.json`` is not valid JSON or lacks its entries, or a file is missing or its checksum
                does not match (corrupt or partial state).
        """
        index = os.path.join(self.root, STATE_FILE)
        with open(index) as f:
            text = f.read()
        try:
            state = json.loads(text)
            if not isinstance(state.get("round"), int) or not isinstance(state.get("files"), dict):
                raise ValueError("it has no integer 'round' and 'files' entries")
        except (ValueError, AttributeError) as e:
            raise ValueError(f"FedBip state index {index} is not valid JSON ({e}): it is corrupt, not used") from e
        loaded: Dict[str, Params] = {}
        for key, entry in state["files"].items():
            path = os.path.join(self.root, entry["file"])
            if not os.path.exists(path):
                raise ValueError(f"FedBip state in {self.root} is incomplete: {entry['file']} is missing")
            if sha256_file(path) != entry["sha256"]:
                raise ValueError(f"FedBip state file {path} does not match its checksum: it is corrupt, not used")
            loaded[key] = load_file(path)
        theta0 = loaded.pop("__theta0__")
        return state["round"], theta0, loaded, state.get("extra", {})


def run_key_from(extra: Optional[Mapping] = None) -> str:
    """The run key a run's tasks carry (``FedBipKeys.RUN_KEY``): the one in a loaded state's ``extra``, else a new one.

    A run keeps its key across a server crash: the server stores it in every state it saves (``extra``) and a
    resumed server reuses it, so sites find the private state they snapshotted under it (see
    :mod:`fedbip_nvflare.client.site_state`). A new run, or a state saved before run keys existed, gets a fresh
    random key (32 hex digits).
    """
    key = (extra or {}).get(K.RUN_KEY)
    return str(key) if key else uuid.uuid4().hex


UPDATES_DIR = "updates"


def save_round_updates(out_dir: str, rnd: int, sent: Dict[str, Params], returned: Dict[str, Params]) -> str:
    """Saves what each client was sent and returned in a round (the ``log_updates`` audit trail).

    Writes ``<out_dir>/updates/round_<rnd>/sent_<client file>`` and ``returned_<client file>`` (safetensors,
    file names from :meth:`ClientStateStore.file_name`) for every client in ``returned``.

    Returns:
        The round's folder.
    """
    folder = os.path.join(out_dir, UPDATES_DIR, f"round_{rnd:03d}")
    os.makedirs(folder, exist_ok=True)
    for client, params in returned.items():
        name = ClientStateStore.file_name(client)
        save_file({n: t.contiguous() for n, t in sent[client].items()}, os.path.join(folder, "sent_" + name))
        save_file({n: t.contiguous() for n, t in params.items()}, os.path.join(folder, "returned_" + name))
    return folder
