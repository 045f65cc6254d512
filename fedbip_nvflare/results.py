"""Reading a FedBip run's per-client results and printing them as a table."""

import glob
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

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


def load_run(
    run_dir: str, min_clients: int, method: Optional[str] = None
) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """A finished job's results and, if it failed, the one-line reason (see :func:`run_failure`).

    Args:
        run_dir: The job's workspace or result folder.
        min_clients: Least number of clients that must produce a final result.
        method: Overrides the method name.

    Returns:
        ``(results or None, reason or None)``: no results when the server wrote none (it aborted or the job did
        not finish).
    """
    try:
        results = load_results(run_dir, method)
    except FileNotFoundError as e:
        return None, f"the server aborted or did not finish: {e}"
    return results, run_failure(results, min_clients)


def execute_and_check(
    recipe: Any, env: Any, run_dir: str, min_clients: int, method: Optional[str] = None
) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Runs a recipe (``recipe.execute(env)``) and returns its results and, if the run failed, the reason.

    Args:
        recipe: An NVFlare recipe (FedBipRecipe, or a stock recipe with FedBip dropped in).
        env: Where it runs (``SimEnv``, ``PocEnv``, ...).
        run_dir: The job's workspace, where the server writes ``fedbip/results.json``.
        min_clients: Least number of clients that must produce a final result.
        method: Overrides the method name in the results.

    Returns:
        ``(results or None, one-line reason or None)``, as :func:`load_run`; a simulator that exited with an error
        but left no other reason gives its own message.
    """
    try:
        recipe.execute(env)
    except RuntimeError as e:  # SimEnv: the simulator exited with an error code
        results, reason = load_run(run_dir, min_clients, method)
        return results, reason or " ".join(str(e).split())
    return load_run(run_dir, min_clients, method)


@dataclass
class JobRun:
    """What :func:`run_job` did: the recipe (None: it could not be built), results, and the failure if any."""

    recipe: Any
    run_dir: Optional[str]
    results: Optional[Dict[str, Any]]
    failure: Optional[str]
    exit_code: int

    def finish(self) -> int:
        """Prints the failure's one-line reason (if any) to stderr and returns the job's exit code."""
        if self.failure:
            print(self.failure if self.exit_code == 2 else f"FAILED: {self.failure}", file=sys.stderr)
        return self.exit_code


def run_job(
    build: Callable[[], Any], env: Any, workspace: str, min_clients: int, method: Optional[str] = None
) -> JobRun:
    """A job script's run: builds the recipe, runs it in ``env`` and checks the results (:func:`execute_and_check`).

    Args:
        build: Builds the recipe; a ``ValueError`` is a flag combination that cannot work (exit code 2, before any
            simulator starts).
        env: Where it runs.
        workspace: The simulator's workspace root (the run folder is ``<workspace>/<recipe name>``).
        min_clients: Least number of clients that must produce a final result.
        method: Overrides the method name in the results.

    Returns:
        The run; its ``exit_code`` is 0, 1 (the run failed) or 2 (the recipe could not be built).
    """
    try:
        recipe = build()
    except ValueError as e:
        return JobRun(None, None, None, f"error: {' '.join(str(e).split())}", 2)
    run_dir = os.path.join(workspace, recipe.name)
    results, failure = execute_and_check(recipe, env, run_dir, min_clients, method)
    return JobRun(recipe, run_dir, results, failure, 1 if failure else 0)


def site_errors(results: Mapping[str, Any]) -> Dict[str, str]:
    """``{site: reason}`` for every client without a final result (its recorded error, else "no final result")."""
    errors = {}
    for site, info in results.get("clients", {}).items():
        if info.get(K.ERROR) or info.get("accuracy") is None:
            errors[site] = str(info.get(K.ERROR) or "no final result")
    return errors


def run_failure(results: Optional[Mapping[str, Any]], min_clients: Optional[int] = None) -> Optional[str]:
    """The one-line reason a run failed, or None if it succeeded.

    A run fails when the server wrote no results (it aborted), when no client produced a final result, or when
    fewer than ``min_clients`` did. Failed sites beyond that are not a run failure (the table marks them).

    Args:
        results: The run's results (``results.json`` schema), or None if the server wrote none.
        min_clients: Least number of clients with a final result (None: the run's own ``min_clients``, else 1).
    """
    if results is None:
        return "the server aborted: it wrote no results"
    if min_clients is None:
        min_clients = int(results.get(K.MIN_CLIENTS) or 1)
    clients = results.get("clients", {})
    errors = site_errors(results)
    produced = len(clients) - len(errors)
    first = next(iter(errors.items()), None)
    example = f"; {first[0]}: {first[1]}" if first else ""
    if produced == 0:
        return f"no client produced a result ({len(clients)} client(s) failed{example})"
    if produced < min_clients:
        return (
            f"only {produced} of {len(clients)} clients produced a result, fewer than min_clients={min_clients} "
            f"({len(errors)} failed{example})"
        )
    return None


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
    """A plain-text per-client table (task, train size, accuracy after round 0's local training, final accuracy).

    "round 0" is each site's own first round of training, before any aggregation: it shows that training helps, not
    whether federating did (:func:`format_comparison` puts other methods beside it).

        A site without a final result shows ``FAILED:`` and its error instead of its row's values.
    """

    def pct(x):
        return "   -  " if x is None else f"{100 * float(x):6.2f}"

    errors = site_errors(results)
    lines = [f"{'site':<10} {'task':<18} {'n_train':>7} {'acc round 0':>11} {'acc final':>9}  adapter"]
    before, final = [], []
    for site, c in results["clients"].items():
        if site in errors:
            lines.append(f"{site:<10} FAILED: {errors[site]}")
            continue
        lines.append(
            f"{site:<10} {str(c.get('task')):<18} {str(c.get('n_train')):>7} {pct(c.get('accuracy_before')):>11}"
            f" {pct(c.get('accuracy')):>9}  {c.get('adapter_dir') or '-'}"
        )
        if c.get("accuracy_before") is not None and c.get("accuracy") is not None:
            before.append(float(c["accuracy_before"]))
            final.append(float(c["accuracy"]))
    if final:
        lines.append(
            f"{'mean':<10} {'':<18} {'':>7} {pct(sum(before) / len(before)):>11} {pct(sum(final) / len(final)):>9}"
        )
    return "\n".join(lines)


def format_comparison(runs: Mapping[str, Mapping[str, Any]], reference: str) -> str:
    """A per-client table of several methods' final accuracy on the same sites, with Δ against ``reference``.

    Args:
        runs: ``{method: results}`` of runs on the same sites, data and budget (the first is the main one).
        reference: The method every Δ column compares against (e.g. "local": each site trained alone).

    Returns:
        Rows per site (task, each method's accuracy in %, each other method's Δ in points), then the mean over the
        sites every method has a result for; a site a method has no result for shows "-" there.
    """
    methods = list(runs)
    others = [m for m in methods if m != reference]
    sites = list(dict.fromkeys(s for r in runs.values() for s in r.get("clients", {})))

    def accuracy(method: str, site: str) -> Optional[float]:
        value = runs[method].get("clients", {}).get(site, {}).get("accuracy")
        return None if value is None else 100 * float(value)

    def cell(value: Optional[float], sign: str = "") -> str:
        return f"{'-':>9}" if value is None else f"{value:{sign}9.1f}"

    header = f"{'site':<10} {'task':<18}" + "".join(f" {m:>9}" for m in methods)
    header += "".join(f" {'Δ ' + m[:7]:>9}" for m in others)
    lines = [header]
    complete = []
    for site in sites:
        values = {m: accuracy(m, site) for m in methods}
        task = next((r["clients"][site].get("task") for r in runs.values() if site in r.get("clients", {})), None)
        ref = values[reference]
        deltas = [None if values[m] is None or ref is None else values[m] - ref for m in others]
        lines.append(
            f"{site:<10} {str(task):<18}"
            + "".join(f" {cell(values[m])}" for m in methods)
            + "".join(f" {cell(d, '+')}" for d in deltas)
        )
        if all(v is not None for v in values.values()):
            complete.append(values)
    if complete:
        mean = {m: sum(v[m] for v in complete) / len(complete) for m in methods}
        lines.append(
            f"{'mean':<10} {f'({len(complete)} sites)':<18}"
            + "".join(f" {cell(mean[m])}" for m in methods)
            + "".join(f" {cell(mean[m] - mean[reference], '+')}" for m in others)
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
