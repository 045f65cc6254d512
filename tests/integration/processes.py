"""Processes a test started, found by a folder only they use (no pgrep needed)."""

from benchmarks.faults import pids_running_from

__all__ = ["pids_running_from"]
