"""A site's private state kept across jobs: snapshots outside the job's run folder, restored when a run resumes.

A site's private state lives in its state folder (``<run dir>/fedbip`` for ``FedBipExecutor``): its head
(:data:`~fedbip_nvflare.client.trainer_base.HEAD_FILE`), its round record (:data:`HISTORY_FILE`) and, with the
self-check, its own last model (:data:`~fedbip_nvflare.client.self_check.OWN_FILE`). A server that crashed and is
resumed from its persisted state (``resume_from``) runs as a new job with a new, empty run folder; without these
snapshots its sites would start again from a fresh head and no history.

Every task of a FedBip run carries the run's key (``FedBipKeys.RUN_KEY``; a resumed server reuses the crashed run's).
After each train task the site copies its state to ``<root>/<run key>/<site>/round_<r>/`` (atomically: a temporary
folder renamed into place) with ``snapshot.json`` (run key, site, round, each file's SHA-256), and keeps the last
:data:`KEEP` rounds. The state folder's ``run.json`` says which run and round its state is. Before a task of round r,
a state folder that does not hold this run's state of a round before r (a new job's empty folder, another run's
state, or a round the server redoes) gets the latest intact snapshot of this run before r.
"""

import json
import logging
import os
import re
import shutil
from typing import Any, Dict, List, Optional

from fedbip_nvflare.client.self_check import OWN_FILE
from fedbip_nvflare.client.trainer_base import HEAD_FILE
from fedbip_nvflare.state_files import safe_name, sha256_file

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
STATE_FILES = (HEAD_FILE, HISTORY_FILE, OWN_FILE)  # what a snapshot holds, those that exist
SNAPSHOT_FILE = "snapshot.json"  # in a snapshot folder: run key, site, round and {file: sha256}
RUN_FILE = "run.json"  # in the state folder: {"run_key", "round"} of the state it holds
KEEP = 2  # a resumed server redoes at most the one round in flight, so two snapshots always hold the one needed
_ROUND = re.compile(r"round_(\d+)")


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def _read_json(path: str) -> Dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing or not a valid JSON object."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)


class SiteSnapshots:
    """One site's snapshots of its private state, per run and round, in a folder that outlives the job.

    Args:
        root: Folder of the snapshots, outside any job's run folder (``FedBipExecutor``: ``<site workspace>/
            fedbip_state``); one site may share it with others, each keeps its own subfolders.
        site: The site's name.
        keep: How many of a run's latest rounds are kept (older snapshots are deleted after each save).

    Raises:
        ValueError: An empty root or site, or ``keep`` < 1.
    """

    def __init__(self, root: str, site: str, keep: int = KEEP):
        if not root or not site:
            raise ValueError(f"SiteSnapshots needs a root folder and a site name, got {root!r} and {site!r}")
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self.root = root
        self.site = site
        self.keep = keep

    def folder(self, run_key: str) -> str:
        """``<root>/<run key>/<site>``: the run's snapshots of this site (names made file-safe)."""
        return os.path.join(self.root, safe_name(run_key), safe_name(self.site))

    def snapshot_path(self, run_key: str, rnd: int) -> str:
        """``<folder>/round_<rnd>``: where the snapshot of round ``rnd`` of run ``run_key`` is (or would be)."""
        return os.path.join(self.folder(run_key), f"round_{rnd:03d}")

    def rounds(self, run_key: str) -> List[int]:
        """The rounds of this run with a complete snapshot (renamed into place, with its ``snapshot.json``), sorted."""
        folder = self.folder(run_key)
        if not os.path.isdir(folder):
            return []
        found = (_ROUND.fullmatch(name) for name in os.listdir(folder))
        return sorted(
            int(m.group(1)) for m in found if m and os.path.exists(os.path.join(folder, m.group(0), SNAPSHOT_FILE))
        )

    def save(self, state_dir: str, run_key: str, rnd: int) -> str:
        """Snapshots the private state in ``state_dir`` after round ``rnd`` of run ``run_key``.

        Copies the files of :data:`STATE_FILES` that exist into a temporary folder with ``snapshot.json``, renames it
        to ``round_<rnd>`` (replacing an earlier snapshot of that round), records the run and round in the state
        folder's ``run.json`` and deletes the run's snapshots older than the last :attr:`keep`.

        Returns:
            The snapshot's folder.
        """
        final = self.snapshot_path(run_key, rnd)
        tmp, old = final + ".tmp", final + ".old"
        _remove(tmp)  # left by a crash during an earlier save
        os.makedirs(tmp)
        files = {}
        for name in STATE_FILES:
            source = os.path.join(state_dir, name)
            if os.path.exists(source):
                shutil.copyfile(source, os.path.join(tmp, name))
                files[name] = sha256_file(os.path.join(tmp, name))
        _write_json(
            os.path.join(tmp, SNAPSHOT_FILE), {"run_key": run_key, "site": self.site, "round": rnd, "files": files}
        )
        _remove(old)
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
        _write_json(os.path.join(state_dir, RUN_FILE), {"run_key": run_key, "round": rnd})
        for stale in self.rounds(run_key)[: -self.keep]:
            _remove(self.snapshot_path(run_key, stale))
        return final

    def _problem(self, path: str, run_key: str, rnd: int) -> Optional[str]:
        """Why the snapshot in ``path`` cannot be restored (None: it is intact)."""
        manifest = _read_json(os.path.join(path, SNAPSHOT_FILE))
        if manifest.get("run_key") != run_key or manifest.get("round") != rnd or manifest.get("site") != self.site:
            return f"its {SNAPSHOT_FILE} is not of {self.site}'s round {rnd} of run {run_key}"
        files = manifest.get("files")
        if not isinstance(files, dict) or not set(files) <= set(STATE_FILES):
            return f"its {SNAPSHOT_FILE} lists no valid files"
        for name, digest in files.items():
            copy = os.path.join(path, name)
            if not os.path.exists(copy):
                return f"{name} is missing"
            if sha256_file(copy) != digest:
                return f"{name} does not match its checksum"
        return None

    def restore(self, state_dir: str, run_key: str, before: int) -> Optional[int]:
        """Puts the latest intact snapshot of run ``run_key`` of a round before ``before`` into ``state_dir``.

        Each file is copied to a temporary name and renamed; a state file the snapshot does not hold is removed, so
        the state folder holds exactly the snapshot's state. A damaged snapshot (missing file, wrong checksum) is
        skipped with a warning and the next older one is tried. ``run.json`` records the restored run and round.

        Returns:
            The restored round, or None when no intact snapshot of a round before ``before`` exists.
        """
        for rnd in reversed([r for r in self.rounds(run_key) if r < before]):
            path = self.snapshot_path(run_key, rnd)
            problem = self._problem(path, run_key, rnd)
            if problem is not None:
                logger.warning("%s: snapshot %s is not restored: %s", self.site, path, problem)
                continue
            files = _read_json(os.path.join(path, SNAPSHOT_FILE))["files"]
            os.makedirs(state_dir, exist_ok=True)
            restored = []
            for name in STATE_FILES:
                target = os.path.join(state_dir, name)
                if name in files:
                    shutil.copyfile(os.path.join(path, name), target + ".tmp")
                    os.replace(target + ".tmp", target)
                    restored.append(f"{name} (sha256 {sha256_file(target)[:16]})")
                elif os.path.exists(target):
                    os.remove(target)
            _write_json(os.path.join(state_dir, RUN_FILE), {"run_key": run_key, "round": rnd})
            logger.info(
                "%s: restored its private state after round %d of run %s from %s: %s",
                self.site,
                rnd,
                run_key,
                path,
                ", ".join(restored) or "no files",
            )
            return rnd
        return None

    def sync(self, state_dir: str, run_key: str, current_round: int) -> Optional[int]:
        """Before a task of round ``current_round`` of run ``run_key``: makes ``state_dir`` hold this run's state.

        Nothing changes when ``state_dir`` already holds this run's state after a round before ``current_round``
        (the same job's earlier rounds). Otherwise (a resumed run's new, empty state folder; another run's state; or
        state of a round the server is redoing after a crash) the latest intact snapshot of this run before
        ``current_round`` is restored (:meth:`restore`); without one the state folder stays as it is.

        Returns:
            The restored round, or None when nothing was restored.
        """
        held = _read_json(os.path.join(state_dir, RUN_FILE))
        current = held.get("run_key") == run_key
        if current and isinstance(held.get("round"), int) and held["round"] < current_round:
            return None
        restored = self.restore(state_dir, run_key, current_round)
        if restored is None and current_round > 0:
            logger.info(
                "%s: no snapshot of run %s before round %d in %s: it goes on with the state it has%s",
                self.site,
                run_key,
                current_round,
                self.folder(run_key),
                f" (of round {held.get('round')})" if current else " (none from this run)",
            )
        return restored
