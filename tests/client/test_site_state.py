"""Snapshots of a site's private state outside the job (fedbip_nvflare.client.site_state), on real files."""

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from fedbip_nvflare.client import SiteSession, TrainSettings
from fedbip_nvflare.client.self_check import OWN_FILE
from fedbip_nvflare.client.site_state import (
    HISTORY_FILE,
    RUN_FILE,
    SNAPSHOT_FILE,
    STATE_FILES,
    SiteSnapshots,
)
from fedbip_nvflare.client.trainer_base import HEAD_FILE
from fedbip_nvflare.models import LoraSettings, initial_adapter
from fedbip_nvflare.state_files import sha256_file

KEY = "0123456789abcdef0123456789abcdef"


def _head(rnd: int) -> dict:
    gen = torch.Generator().manual_seed(100 + rnd)
    return {"weight": torch.randn(3, 8, generator=gen), "bias": torch.randn(3, generator=gen)}


def _write_state(state_dir: str, rnd: int, own: bool = True) -> dict:
    """The state a site holds after round ``rnd``: a head, the history of rounds 0..rnd and (optionally) its own θ."""
    os.makedirs(state_dir, exist_ok=True)
    head = _head(rnd)
    save_file(head, os.path.join(state_dir, HEAD_FILE))
    with open(os.path.join(state_dir, HISTORY_FILE), "w") as f:
        json.dump([{"round": r, "accuracy_received": 0.5 + r / 100} for r in range(rnd + 1)], f)
    if own:
        save_file({"lora_A": torch.full((2, 2), float(rnd))}, os.path.join(state_dir, OWN_FILE))
    elif os.path.exists(os.path.join(state_dir, OWN_FILE)):
        os.remove(os.path.join(state_dir, OWN_FILE))
    return head


def _history_rounds(state_dir: str) -> list:
    with open(os.path.join(state_dir, HISTORY_FILE)) as f:
        return [h["round"] for h in json.load(f)]


def _marker(state_dir: str) -> dict:
    with open(os.path.join(state_dir, RUN_FILE)) as f:
        return json.load(f)


def _assert_head(state_dir: str, expected: dict) -> None:
    loaded = load_file(os.path.join(state_dir, HEAD_FILE))
    assert sorted(loaded) == sorted(expected)
    assert all(torch.equal(loaded[n], expected[n]) for n in expected), "the head must come back bit for bit"


def _snapshots_after(tmp_path, rounds, keep=2, site="site-1") -> SiteSnapshots:
    snaps = SiteSnapshots(str(tmp_path / "root"), site, keep=keep)
    for rnd in rounds:
        _write_state(str(tmp_path / "job1"), rnd)
        snaps.save(str(tmp_path / "job1"), KEY, rnd)
    return snaps


def test_save_copies_the_state_files_bit_for_bit_with_their_checksums(tmp_path):
    state = str(tmp_path / "job1")
    _write_state(state, 0)
    snaps = SiteSnapshots(str(tmp_path / "root"), "site-1")
    path = snaps.save(state, KEY, 0)
    assert path == os.path.join(str(tmp_path / "root"), KEY, "site-1", "round_000")
    assert sorted(os.listdir(path)) == sorted([*STATE_FILES, SNAPSHOT_FILE])
    for name in STATE_FILES:
        with open(os.path.join(path, name), "rb") as a, open(os.path.join(state, name), "rb") as b:
            assert a.read() == b.read()
    with open(os.path.join(path, SNAPSHOT_FILE)) as f:
        manifest = json.load(f)
    assert manifest == {
        "run_key": KEY,
        "site": "site-1",
        "round": 0,
        "files": {name: sha256_file(os.path.join(state, name)) for name in STATE_FILES},
    }
    assert _marker(state) == {"run_key": KEY, "round": 0}
    assert sorted(os.listdir(snaps.folder(KEY))) == ["round_000"], "no temporary folder is left"


def test_restore_into_a_new_state_folder_brings_back_head_history_and_own_model(tmp_path):
    snaps = SiteSnapshots(str(tmp_path / "root"), "site-1")
    head = _write_state(str(tmp_path / "job1"), 0)
    snaps.save(str(tmp_path / "job1"), KEY, 0)
    fresh = str(tmp_path / "job2" / "fedbip")
    assert snaps.restore(fresh, KEY, before=1) == 0
    _assert_head(fresh, head)
    assert _history_rounds(fresh) == [0]
    assert torch.equal(load_file(os.path.join(fresh, OWN_FILE))["lora_A"], torch.zeros(2, 2))
    assert _marker(fresh) == {"run_key": KEY, "round": 0}


@pytest.mark.parametrize("before, expected", [(0, None), (1, 0), (2, 1), (7, 1)])
def test_restore_picks_the_latest_snapshot_before_the_round(tmp_path, before, expected):
    snaps = _snapshots_after(tmp_path, [0, 1])
    fresh = str(tmp_path / "job2")
    assert snaps.restore(fresh, KEY, before) == expected
    if expected is None:
        assert not os.path.exists(fresh), "nothing is written when no snapshot fits"
    else:
        _assert_head(fresh, _head(expected))
        assert _history_rounds(fresh) == list(range(expected + 1))


def test_only_the_last_rounds_are_kept(tmp_path):
    snaps = _snapshots_after(tmp_path, [0, 1, 2, 3], keep=2)
    assert snaps.rounds(KEY) == [2, 3]
    assert sorted(os.listdir(snaps.folder(KEY))) == ["round_002", "round_003"]
    assert _snapshots_after(tmp_path / "three", [0, 1, 2, 3], keep=3).rounds(KEY) == [1, 2, 3]


def test_a_round_saved_again_replaces_its_snapshot(tmp_path):
    snaps = _snapshots_after(tmp_path, [0, 1])
    state = str(tmp_path / "job1")
    head = _write_state(state, 5)  # the round redone after a resume trains to another state
    snaps.save(state, KEY, 1)
    assert snaps.rounds(KEY) == [0, 1]
    assert sorted(os.listdir(snaps.folder(KEY))) == ["round_000", "round_001"]
    _assert_head(os.path.join(snaps.folder(KEY), "round_001"), head)


def test_an_unfinished_save_is_not_a_snapshot(tmp_path):
    snaps = _snapshots_after(tmp_path, [0])
    os.makedirs(os.path.join(snaps.folder(KEY), "round_001.tmp"))  # a crash during the save of round 1
    os.makedirs(os.path.join(snaps.folder(KEY), "round_002"))  # a folder without snapshot.json
    assert snaps.rounds(KEY) == [0]
    assert snaps.restore(str(tmp_path / "job2"), KEY, before=3) == 0


def test_a_damaged_snapshot_is_skipped_for_the_one_before(tmp_path, caplog):
    snaps = _snapshots_after(tmp_path, [0, 1])
    path = os.path.join(snaps.folder(KEY), "round_001", HEAD_FILE)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[-1] ^= 0xFF
        f.seek(0)
        f.write(bytes(data))
    fresh = str(tmp_path / "job2")
    with caplog.at_level(logging.WARNING, logger="fedbip_nvflare.client.site_state"):
        assert snaps.restore(fresh, KEY, before=2) == 0
    assert f"{HEAD_FILE} does not match its checksum" in caplog.text
    _assert_head(fresh, _head(0))


def test_restore_removes_a_state_file_the_snapshot_does_not_hold(tmp_path):
    snaps = SiteSnapshots(str(tmp_path / "root"), "site-1")
    _write_state(str(tmp_path / "job1"), 0, own=False)
    snaps.save(str(tmp_path / "job1"), KEY, 0)
    stale = str(tmp_path / "stale")
    _write_state(stale, 3)
    assert snaps.restore(stale, KEY, before=1) == 0
    assert not os.path.exists(os.path.join(stale, OWN_FILE))
    _assert_head(stale, _head(0))
    assert _history_rounds(stale) == [0]


def test_sites_and_runs_keep_apart(tmp_path):
    one = _snapshots_after(tmp_path, [0, 1], site="site-1")
    two = SiteSnapshots(one.root, "site/2")
    _write_state(str(tmp_path / "two"), 4)
    two.save(str(tmp_path / "two"), KEY, 0)
    assert two.folder(KEY) == os.path.join(one.root, KEY, "site_2")
    assert one.rounds(KEY) == [0, 1] and two.rounds(KEY) == [0]
    assert one.rounds("another-run") == []
    assert one.restore(str(tmp_path / "job2"), "another-run", before=5) is None


def test_sync_restores_only_when_the_folder_does_not_hold_the_run_before_the_round(tmp_path, caplog):
    snaps = _snapshots_after(tmp_path, [0, 1])
    state = str(tmp_path / "job1")  # holds round 1 of KEY
    assert snaps.sync(state, KEY, 2) is None, "the same job's next round: nothing to do"
    _assert_head(state, _head(1))
    assert snaps.sync(state, KEY, 1) == 0, "the server redoes round 1: the state goes back to after round 0"
    _assert_head(state, _head(0))
    assert _history_rounds(state) == [0]
    fresh = str(tmp_path / "job2" / "fedbip")
    with caplog.at_level(logging.INFO, logger="fedbip_nvflare.client.site_state"):
        assert snaps.sync(fresh, KEY, 2) == 1, "a resumed run's empty state folder"
    assert f"site-1: restored its private state after round 1 of run {KEY}" in caplog.text
    assert sha256_file(os.path.join(fresh, HEAD_FILE))[:16] in caplog.text
    other = str(tmp_path / "other")
    _write_state(other, 3)
    snaps.save(other, "another-run", 3)
    assert snaps.sync(other, KEY, 2) == 1, "another run's state is replaced"
    _assert_head(other, _head(1))
    assert snaps.sync(str(tmp_path / "job3"), "new-run", 0) is None, "a new run has nothing to restore"


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="keep must be"):
        SiteSnapshots(str(tmp_path), "site-1", keep=0)
    with pytest.raises(ValueError, match="root folder and a site name"):
        SiteSnapshots("", "site-1")


# -- a real site ------------------------------------------------------------------------------------
DATA = {"suite": "text-tasks", "n_train": 16, "n_test": 8, "seed": 0}
SETTINGS = TrainSettings(batch_size=8, max_length=32, num_threads=1, round_eval_examples=8)


def test_a_site_of_a_resumed_run_restores_its_trained_head_and_history(tmp_path, minilm_path):
    root = str(tmp_path / "fedbip_state")
    theta0 = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    crashed = SiteSession(
        "site-1", str(tmp_path / "job1"), minilm_path, DATA, LoraSettings(), SETTINGS, snapshot_root=root
    )
    assert crashed.begin_task(KEY, 0) is None
    _, metrics, _ = crashed.train(theta0, current_round=0)
    trained = {n: t.clone() for n, t in crashed.trainer.model.head_state().items()}
    assert crashed.snapshots.rounds(KEY) == [0]

    resumed = SiteSession(
        "site-1", str(tmp_path / "job2"), minilm_path, DATA, LoraSettings(), SETTINGS, snapshot_root=root
    )
    assert any(not torch.equal(resumed.trainer.model.head_state()[n], trained[n]) for n in trained)
    assert resumed.begin_task(KEY, 1) == 0
    restored = resumed.trainer.model.head_state()
    assert all(torch.equal(restored[n], trained[n]) for n in trained), "the trained head is back bit for bit"
    assert [h["round"] for h in resumed._history()] == [0]
    assert resumed._history()[0]["accuracy_received"] == pytest.approx(metrics["accuracy_received"])
    resumed.train(theta0, current_round=1)
    assert [h["round"] for h in resumed._history()] == [0, 1]
    assert resumed.snapshots.rounds(KEY) == [0, 1]
    _, meta = resumed.validate(theta0)
    assert meta["accuracy_before"] == pytest.approx(metrics["accuracy_local"]), "round 0's record survives"


def test_a_session_without_a_run_key_takes_no_snapshots_and_a_failed_snapshot_does_not_fail_the_round(
    tmp_path, minilm_path, caplog
):
    root = str(tmp_path / "fedbip_state")
    session = SiteSession(
        "site-1", str(tmp_path / "job"), minilm_path, DATA, LoraSettings(), SETTINGS, snapshot_root=root
    )
    theta0 = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    assert session.begin_task(None, 0) is None
    session.train(theta0, current_round=0)
    assert not os.path.exists(root)
    with open(root, "w") as f:  # the snapshot folder cannot be made
        f.write("not a folder")
    assert session.begin_task(KEY, 1) is None
    with caplog.at_level(logging.ERROR, logger="fedbip_nvflare.client.site"):
        params, metrics, _ = session.train(theta0, current_round=1)
    assert set(params) == set(theta0) and "train_loss" in metrics
    assert "site-1: could not snapshot its private state after round 1" in caplog.text
    assert [h["round"] for h in session._history()] == [0, 1]
