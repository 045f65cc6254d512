"""Reading a FedBip run's per-client results and printing them as a table."""

import glob
import json
import os
from typing import Any, Dict, Optional

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
