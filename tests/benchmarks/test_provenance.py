"""Every benchmark's JSON record carries the command, the commit (with its dirty flag) and the machine."""

import os
import subprocess

import pytest

from benchmarks import aggregation, faults, privacy, reporting
from benchmarks.reporting import PROVENANCE_KEYS


def _check(info: dict, command: str) -> None:
    assert info["command"] == command
    commit = info["git_commit"]
    assert commit is None or len(commit.split("+")[0]) == 40
    assert info["machine"]["cpus"] >= 1 and info["machine"]["python"]


def test_dirty_flag_counts_untracked_files(tmp_path):
    if reporting.git_commit() is None:
        pytest.skip("not a git checkout")
    clean = subprocess.run(["git", "status", "--porcelain"], cwd=reporting.REPO, capture_output=True, text=True)
    untracked = os.path.join(reporting.REPO, "tests", f"untracked-{os.getpid()}.tmp")
    open(untracked, "w").close()
    try:
        assert reporting.git_commit().endswith("+dirty")
    finally:
        os.remove(untracked)
    assert reporting.git_commit().endswith("+dirty") == bool(clean.stdout.strip())


def test_command_line_is_quoted():
    assert reporting.command_line("benchmarks.x", ["--name", "a b"]) == "python -m benchmarks.x --name 'a b'"


def test_aggregation_info_has_provenance():
    info = aggregation.run_info("python -m benchmarks.aggregation --output o", True)
    _check(info, "python -m benchmarks.aggregation --output o")
    assert set(PROVENANCE_KEYS) <= set(info) and info["mmap_threshold_fixed"] is True


def test_faults_and_privacy_records_have_provenance(tmp_path):
    info = faults.run(str(tmp_path / "f"), str(tmp_path / "fw"), scenarios=(), command="python -m benchmarks.faults")
    _check(info, "python -m benchmarks.faults")
    info = privacy.run(str(tmp_path / "p"), str(tmp_path / "pw"), cases=(), command="python -m benchmarks.privacy")
    _check(info, "python -m benchmarks.privacy")


def test_one_helper_no_second_copy():
    for module in ("aggregation", "end_to_end", "faults", "hostile", "privacy", "quality", "throughput"):
        with open(os.path.join(reporting.REPO, "benchmarks", f"{module}.py")) as f:
            source = f.read()
        assert "def git_commit" not in source and "def machine" not in source, module
        assert "provenance(" in source, module
