"""Faults injected into one real FedBip SimEnv job (FaultInjector on every site, benchmarks.faults.FAULT_PLAN).

Four sites, four rounds, min_clients=2, norm_bound=2.0; each round different sites fail in different ways (raise,
NaN/Inf, wrong shape/dtype, missing/extra tensor, absurd norm, timeout, client process crash) so that every outcome
stays separable. The checks (shared with ``python -m benchmarks.faults``) read the job's rounds.jsonl, the server
state, the fingerprints every site's ReceivedModelLog recorded and the logs.
"""

import pytest

from benchmarks import faults  # noqa: E402

PLANNED = [(rnd, site, kind) for rnd, plan in faults.FAULT_PLAN.items() for site, kind in plan.items()]


@pytest.fixture(scope="module")
def fault_job(tmp_path_factory, minilm_path):
    spec = faults.fault_job_spec(str(tmp_path_factory.mktemp("faults")))
    files = faults.run_job(spec)
    assert files.returncode == 0, files.log("server")[-3000:]
    rows = faults.fault_rows(files, spec)
    return files, spec, {(r.fault, r.injected): r for r in rows}


def _failed(row) -> list:
    return [f"{c['check']}: {c['detail']}" for c in row.checks if not c["passed"]]


@pytest.mark.parametrize("rnd,site,kind", PLANNED, ids=[f"r{r}-{s}-{k}" for r, s, k in PLANNED])
def test_each_injected_fault_has_its_outcome(fault_job, rnd, site, kind):
    _, _, rows = fault_job
    row = rows[(kind, f"FaultInjector on {site}'s train result, round {rnd}")]
    assert len(row.checks) >= 5
    assert not _failed(row), _failed(row)


def test_too_few_valid_updates_skip_the_round(fault_job):
    _, _, rows = fault_job
    (row,) = [r for (fault, _), r in rows.items() if fault == "too few valid updates"]
    assert not _failed(row), _failed(row)


def test_healthy_rounds_moved_the_models_of_the_aggregated_sites(fault_job):
    """The bit-exact 'kept' checks can fail: an aggregated site's model does change between rounds."""
    files, _, _ = fault_job
    received = files.received("site-4")
    assert received[("train", 0)] != received[("train", 1)], "site-4 was aggregated in round 0"


def test_the_job_finished_without_the_crashed_site(fault_job):
    files, spec, _ = fault_job
    results = files.results()
    assert sorted(results["clients"]) == spec.sites
    validated = sorted(s for s, info in results["clients"].items() if "accuracy" in info)
    assert validated == ["site-1", "site-2", "site-3"]
    assert not faults.pids_running_from(spec.workspace), "a process of the job is still running"
