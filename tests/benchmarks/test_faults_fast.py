"""benchmarks.faults without jobs: the table writer, the outcome checks on a made-up job folder, state damage."""

import json
import os

import pytest

from benchmarks import faults  # noqa: E402


def _info():
    ok = faults.Row("nan", "FaultInjector on site-3's train result, round 0", "rejected | NaN", "its update")
    ok.check("rejected with the expected reason", True)
    ok.check("θ̄_i unchanged", True)
    bad = faults.Row("crash", "os._exit", "gone", "everything")
    bad.check("server log names the dead client", False, "no such line")
    return {
        "command": "python -m benchmarks.faults --output X",
        "git_commit": "abc",
        "wall_time_s": 1.0,
        "rows": [ok.to_dict(), bad.to_dict()],
    }


def test_table_has_one_row_per_fault_with_its_tally_and_lists_failed_checks(tmp_path):
    info = _info()
    text = faults.write(str(tmp_path), info)
    lines = text.splitlines()
    header = lines.index("| fault | injected how | outcome | data lost | checks |")
    rows = [line for line in lines[header + 2 :] if line.startswith("|")]
    assert len(rows) == 2
    assert rows[0].startswith("| nan |") and rows[0].endswith("✅ 2/2 |")
    assert "rejected \\| NaN" in rows[0], "a | inside a cell is escaped"
    assert rows[1].endswith("❌ 0/1 |")
    assert "* crash: server log names the dead client (no such line)" in text
    with open(tmp_path / faults.JSON_FILE) as f:
        assert json.load(f)["rows"] == info["rows"]
    assert (tmp_path / faults.MARKDOWN_FILE).read_text() == text
    assert not faults.all_passed(info)
    info["rows"] = info["rows"][:1]
    assert faults.all_passed(info) and "Failed checks: none" in faults.markdown(info)


def test_a_row_without_checks_does_not_pass():
    info = {"rows": [faults.Row("x", "y", "z", "w").to_dict()]}
    assert not faults.all_passed(info)


def _fake_job(tmp_path, received: dict, rounds: dict):
    """A job folder with rounds.jsonl and one site's received.jsonl."""
    files = faults.JobFiles(str(tmp_path), ["site-1"])
    os.makedirs(files.server_dir)
    with open(os.path.join(files.server_dir, "rounds.jsonl"), "w") as f:
        for rnd, record in rounds.items():
            f.write(json.dumps({"round": rnd, **record}) + "\n")
    os.makedirs(files.site_dir("site-1"))
    with open(os.path.join(files.site_dir("site-1"), "received.jsonl"), "w") as f:
        for (task, rnd), digest in received.items():
            f.write(json.dumps({"site": "site-1", "task": task, "round": rnd, "digest": digest}) + "\n")
    return files


@pytest.mark.parametrize("after,passed", [("d0", True), ("d1", False)])
def test_kept_model_check_compares_fingerprints_bit_for_bit(tmp_path, after, passed):
    files = _fake_job(tmp_path, {("train", 0): "d0", ("train", 1): after}, {0: {"clients": []}})
    row = faults.Row("nan", "", "", "")
    faults.check_kept_model(row, files, "site-1", 0, rounds=2)
    assert [c["passed"] for c in row.checks] == [passed]


@pytest.mark.parametrize("final,passed", [("d1", True), ("d2", False)])
def test_kept_model_check_after_the_last_round_uses_the_validate_model(tmp_path, final, passed):
    files = _fake_job(tmp_path, {("train", 1): "d1", ("validate", 2): final}, {})
    row = faults.Row("nan", "", "", "")
    faults.check_kept_model(row, files, "site-1", 1, rounds=2)
    assert [c["passed"] for c in row.checks] == [passed]


def test_fault_plan_keeps_outcomes_separable():
    sites = set(faults.SITES)
    for rnd, plan in faults.FAULT_PLAN.items():
        assert set(plan) <= sites
    kinds = [k for plan in faults.FAULT_PLAN.values() for k in plan.values()]
    from fedbip_nvflare.client.faults import FAULT_KINDS

    assert sorted(kinds) == sorted(FAULT_KINDS), "every fault kind is injected exactly once"
    crash_round = next(r for r, p in faults.FAULT_PLAN.items() if "crash" in p.values())
    assert crash_round == max(faults.FAULT_PLAN), "a crashed site never returns: crash in the last round"
    absurd = next(p for p in faults.FAULT_PLAN.values() if "absurd-norm" in p.values())
    assert len(sites) - len(absurd) + 1 >= 3, "the norm bound's median needs three accepted updates"


def test_corrupt_state_damages_one_file(tmp_path):
    import torch

    from fedbip_nvflare.server.state import ClientStateStore

    store = ClientStateStore(str(tmp_path / "good"))
    store.save(0, {"a": torch.zeros(4)}, {"site-1": {"a": torch.ones(4)}, "site-2": {"a": torch.full((4,), 2.0)}})
    for how, message in faults.STATE_ERRORS.items():
        faults.corrupt_state(store.root, str(tmp_path / how), how)
        with pytest.raises(ValueError, match=message):
            ClientStateStore(str(tmp_path / how)).load()
    with pytest.raises(ValueError, match="how must be"):
        faults.corrupt_state(store.root, str(tmp_path / "x"), "burnt")
