"""Server crash + resume in real SimEnv jobs, and damaged state folders (benchmarks.faults' scenarios).

The crashed job's whole process tree is killed after round 0 was persisted (round 1 in flight); the same job restarts
with ``resume_from`` the persisted state and must continue at round 1 with every client's θ̄_i bit-exact, and every
site must restore its private head (same SHA-256 as its round-0 snapshot in the killed job) and its round history
(the killed job's round-0 record) from the snapshots it took outside the job. Damaged
copies of a state must never be used: a corrupted tensor file stops a real job at the server's start, before any
site trains; truncated files are refused by the state store with a clear error.
"""

import os
import shutil

import pytest

from benchmarks import faults  # noqa: E402
from fedbip_nvflare.server.state import ClientStateStore  # noqa: E402


def _failed(rows) -> list:
    return [f"{r.fault}: {c['check']}: {c['detail']}" for r in rows for c in r.checks if not c["passed"]]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return str(tmp_path_factory.mktemp("resume"))


@pytest.fixture(scope="module")
def resumed(work, minilm_path):
    return faults.resume_rows(work, crash_round=0)


def test_server_crash_and_resume_is_bit_exact(resumed):
    (row,) = resumed
    names = " ".join(c["check"] for c in row.checks)
    for expected in ("persisted", "run key", "continued at round 1", "bit-exact", "every site validated", "no process"):
        assert expected in names, names
    for site in faults.SITES[:3]:
        for expected in (
            f"{site} snapshotted its head and history after round 0 in the killed job",
            f"{site} restored its round-0 head bit for bit (SHA-256) in the resumed job",
            f"{site}'s history keeps the killed job's rounds ≤ 0 and holds rounds 0..2",
        ):
            assert expected in names, names
    assert not _failed(resumed), _failed(resumed)


def test_a_corrupted_state_stops_a_real_job_before_training(work, resumed):
    persisted = os.path.join(work, "persisted-state")
    rows = faults.state_rows(work, persisted, hows=["corrupted"])
    assert len(rows) == 1 and len(rows[0].checks) == 4
    assert not _failed(rows), _failed(rows)


@pytest.mark.parametrize("how", ["corrupted", "truncated", "truncated-index"])
def test_damaged_state_files_are_refused_by_the_store(work, resumed, tmp_path, how):
    persisted = os.path.join(work, "persisted-state")
    ClientStateStore(persisted).load()  # the good copy loads
    damaged = str(tmp_path / how)
    path = faults.corrupt_state(persisted, damaged, how)
    with pytest.raises(ValueError, match=faults.STATE_ERRORS[how]) as error:
        ClientStateStore(damaged).load()
    assert os.path.basename(path) in str(error.value)
    shutil.rmtree(damaged)
