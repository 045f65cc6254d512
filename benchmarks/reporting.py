"""What every benchmark records and writes: its provenance (command, commit, machine) and its report files."""

import json
import os
import platform
import shlex
import subprocess
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

# The keys every benchmark's JSON carries at its top level (see :func:`provenance`).
PROVENANCE_KEYS = ("command", "git_commit", "machine")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> Optional[str]:
    """The repository's commit (``+dirty`` with uncommitted changes or untracked files), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],  # untracked files count: a run of new code says so
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine() -> Dict[str, Any]:
    """What ran the benchmark: CPUs, processor, platform, the package versions and the GPU where torch sees one."""
    from importlib.metadata import PackageNotFoundError, version

    info: Dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for package in ("torch", "nvflare", "transformers", "peft"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    torch = sys.modules.get("torch")  # only when the benchmark already uses it: no import cost for the others
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_text(machine: Any) -> str:
    """``machine`` (:func:`machine`'s record, or the text older files hold) in words."""
    if not isinstance(machine, dict):
        return str(machine)
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine.get('cpus')} CPU cores ({machine.get('processor')}){gpu}"


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that ran ``python -m module`` with ``argv``, quoted so that it can be pasted into a shell."""
    return " ".join(shlex.quote(a) for a in ["python", "-m", module, *argv])


def provenance(command: str) -> Dict[str, Any]:
    """``{"command", "git_commit", "machine"}`` (:data:`PROVENANCE_KEYS`) of a run of ``command`` here and now."""
    return {"command": command, "git_commit": git_commit(), "machine": machine()}


def write_report(output: str, json_file: str, markdown_file: str, info: Mapping[str, Any], text: str) -> str:
    """Writes ``output/json_file`` (``info``, indented) and ``output/markdown_file`` (``text``); returns ``text``."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, json_file), "w") as f:
        json.dump(info, f, indent=2)
    with open(os.path.join(output, markdown_file), "w") as f:
        f.write(text)
    return text
