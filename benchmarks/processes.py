"""Processes a test or benchmark started, found by a folder only they use (no pgrep needed)."""

import os


def pids_running_from(folder: str) -> list:
    """PIDs of live processes whose command line mentions ``folder`` (read from /proc; no pgrep needed)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if folder in cmdline:
            pids.append(int(entry))
    return pids
