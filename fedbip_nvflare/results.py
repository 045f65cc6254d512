"""Reading a FedBip run's per-client results and printing them as a table."""

import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from fedbip_nvflare.constants import FedBipKeys as K

RESULT_KEYS = ("task", "n_train", "accuracy_before", "accuracy", "adapter_dir")


def find_server_results(run_dir: str) -> str:
    """Path of the server's ``fedbip/results.json`` under a job's workspace or result folder.

    Raises:
        FileNotFoundError: None was written (the job failed or did not finish); names the folder searched.
    """
    matches = sorted(glob.glob(os.path.join(run_dir, "**", K.STATE_DIR, K.RESULTS_FILE), recursive=True))
    server = [m for m in matches if f"{os.sep}server{os.sep}" in m] or matches
    if not server:
        raise FileNotFoundError(
            f"no {K.STATE_DIR}/{K.RESULTS_FILE} under {run_dir}: the job did not finish; see the server log there"
        )
    return server[0]


def load_results(run_dir: str, method: Optional[str] = None) -> Dict[str, Any]:
    """The job's results in the stable ``results.json`` schema.

    ``{"method", "num_rounds", "clients": {site: {"task", "n_train", "accuracy_before", "accuracy",
    "adapter_dir", ...}}}``; extra keys (options, per-round history) are kept.
    """
    with open(find_server_results(run_dir)) as f:
        raw = json.load(f)
    return normalize_results(raw, method)


def normalize_results(raw: Dict[str, Any], method: Optional[str] = None) -> Dict[str, Any]:
    """A results.json's content with every client's stable keys present, clients in site order (site-2 < site-10).

    Args:
        raw: The parsed results.json.
        method: Overrides the method name.
    """
    if method:
        raw["method"] = method
    clients = {}
    for site in sorted(raw.get("clients", {}), key=_site_order):
        info = raw["clients"][site]
        clients[site] = {k: info.get(k) for k in RESULT_KEYS} | {k: v for k, v in info.items() if k not in RESULT_KEYS}
    raw["clients"] = clients
    return raw


def _site_order(site: str):
    prefix, _, number = site.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (site, 0)


def format_table(results: Dict[str, Any]) -> str:
    """A plain-text per-client table (task, train size, accuracy before federation, final accuracy)."""

    def pct(x):
        return "   -  " if x is None else f"{100 * float(x):6.2f}"

    lines = [f"{'site':<10} {'task':<18} {'n_train':>7} {'acc before':>10} {'acc final':>9}  adapter"]
    before, final = [], []
    for site, c in results["clients"].items():
        lines.append(
            f"{site:<10} {str(c.get('task')):<18} {str(c.get('n_train')):>7} {pct(c.get('accuracy_before')):>10}"
            f" {pct(c.get('accuracy')):>9}  {c.get('adapter_dir') or '-'}"
        )
        if c.get("accuracy_before") is not None and c.get("accuracy") is not None:
            before.append(float(c["accuracy_before"]))
            final.append(float(c["accuracy"]))
    if final:
        lines.append(
            f"{'mean':<10} {'':<18} {'':>7} {pct(sum(before) / len(before)):>10} {pct(sum(final) / len(final)):>9}"
        )
    return "\n".join(lines)


def write_results(results: Dict[str, Any], output_dir: str) -> str:
    """Writes ``output_dir/results.json`` and returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, K.RESULTS_FILE)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path


def read_round_matrices(rounds_path: str, key: str = "weights") -> List[Tuple[int, List[str], Any]]:
    """Every aggregated round's ``(round, clients, [N, N] matrix)`` from a run's ``rounds.jsonl``.

    Args:
        rounds_path: The server's ``fedbip/rounds.jsonl`` (one JSON record per round).
        key: ``"weights"`` (p_ik) or ``"similarity"`` (S_ik).

    Returns:
        Numpy float matrices, rows = receiving client; rounds without the matrix (not aggregated) are skipped.
        Layer-wise matrices (``{group: matrix}``) are averaged over groups, unless a model-level ``"model"``
        entry is present, which is used instead. An empty list if the file does not exist.
    """
    if not os.path.exists(rounds_path):
        return []
    with open(rounds_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [m for r in records for m in matrices_of(r, key)]


def matrices_of(record: Dict[str, Any], key: str) -> List[Tuple[int, List[str], Any]]:
    """``[(round, clients, [N, N] matrix)]`` from one ``rounds.jsonl`` record (empty if it has no such matrix).

    Layer-wise matrices (``{group: matrix}``) are averaged over groups, unless a ``"model"`` entry is present.
    """
    import numpy as np

    matrix = record.get(key)
    if matrix is None:
        return []
    if isinstance(matrix, dict):
        matrix = matrix["model"] if "model" in matrix else np.mean([np.asarray(m) for m in matrix.values()], 0)
    return [(int(record["round"]), list(record["clients"]), np.asarray(matrix, dtype=float))]
