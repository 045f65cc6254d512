"""ClientStateStore (persist, verify, load) and resuming FedBipController from a saved state."""

import json
import os

import pytest
import torch
from fedbip_fakes import SITES, accuracy_local, make_theta0

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.server import ClientStateStore


def assert_params_equal(got, expected):
    assert list(got) == list(expected)
    for n in expected:
        assert got[n].dtype == expected[n].dtype and torch.equal(got[n], expected[n]), n


def sample_state():
    theta0 = make_theta0(0)
    thetas = {
        "site-1": {n: t + 1 for n, t in theta0.items()},
        "site/2 odd name": {n: (t * 2).to(torch.bfloat16) for n, t in theta0.items()},
    }
    return theta0, thetas


def test_save_load_roundtrip_is_bit_exact(tmp_path):
    theta0, thetas = sample_state()
    store = ClientStateStore(str(tmp_path / "state"))
    assert not store.exists()
    store.save(4, theta0, thetas, extra={"client_info": {"site-1": {"accuracy_before": 0.5}}})
    assert store.exists()
    rnd, theta0_l, thetas_l, extra = store.load()
    assert rnd == 4
    assert_params_equal(theta0_l, theta0)
    assert list(thetas_l) == list(thetas)
    for c in thetas:
        assert_params_equal(thetas_l[c], thetas[c])
    assert extra == {"client_info": {"site-1": {"accuracy_before": 0.5}}}
    assert not [f for f in os.listdir(store.root) if f.endswith(".tmp")]


def test_file_names_are_sanitised():
    assert ClientStateStore.file_name("site-1") == "client_site-1.safetensors"
    assert ClientStateStore.file_name("site/2 odd name") == "client_site_2_odd_name.safetensors"
    assert ClientStateStore.file_name("../x") == "client_.._x.safetensors"
    assert "/" not in ClientStateStore.file_name("a/../../b")


def test_save_again_replaces_the_state(tmp_path):
    theta0, thetas = sample_state()
    store = ClientStateStore(str(tmp_path))
    store.save(0, theta0, thetas)
    newer = {"site-1": {n: t - 5 for n, t in theta0.items()}}
    store.save(1, theta0, newer)
    rnd, _, loaded, extra = store.load()
    assert rnd == 1 and list(loaded) == ["site-1"] and extra == {}
    assert_params_equal(loaded["site-1"], newer["site-1"])


def _flip_a_byte(path):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x01
        f.seek(0)
        f.write(data)


@pytest.mark.parametrize("which", ["client_site-1.safetensors", "theta0.safetensors"])
def test_corrupted_file_is_detected(tmp_path, which):
    theta0, thetas = sample_state()
    store = ClientStateStore(str(tmp_path))
    store.save(2, theta0, thetas)
    _flip_a_byte(os.path.join(str(tmp_path), which))
    with pytest.raises(ValueError, match="checksum"):
        store.load()


def test_missing_file_is_detected(tmp_path):
    theta0, thetas = sample_state()
    store = ClientStateStore(str(tmp_path))
    store.save(2, theta0, thetas)
    os.remove(os.path.join(str(tmp_path), ClientStateStore.file_name("site/2 odd name")))
    with pytest.raises(ValueError, match="missing"):
        store.load()


def test_no_state_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ClientStateStore(str(tmp_path / "nothing")).load()


def test_state_json_records_round_and_checksums(tmp_path):
    theta0, thetas = sample_state()
    ClientStateStore(str(tmp_path)).save(7, theta0, thetas)
    with open(tmp_path / "state.json") as f:
        state = json.load(f)
    assert state["round"] == 7
    assert set(state["files"]) == {"__theta0__", "site-1", "site/2 odd name"}
    assert all(len(e["sha256"]) == 64 for e in state["files"].values())


# -- resume --------------------------------------------------------------------------------------------
def test_resume_continues_at_the_next_round_with_the_loaded_thetas(make_harness, adapter_calls, monkeypatch):
    first = make_harness(num_rounds=2, name="first").run()
    saved_round, saved_theta0, saved, _ = ClientStateStore(first.state_dir).load()
    assert saved_round == 1

    def no_new_theta0(*args, **kwargs):
        raise AssertionError("a resumed run must reuse the saved θ̄⁰")

    import fedbip_nvflare.server.controller as controller_module

    monkeypatch.setattr(controller_module, "initial_adapter", no_new_theta0)
    resumed = make_harness(num_rounds=4, name="resumed", resume_from=first.state_dir).run()

    train = resumed.sites.train_calls()
    assert train[0].round == 2
    assert sorted({c.round for c in train}) == [2, 3]
    assert_params_equal(resumed.controller.theta0, saved_theta0)
    for site, params in resumed.sites.sent(2).items():
        assert_params_equal(params, saved[site])
    assert any("resumed" in m for m in resumed.log.messages("info"))

    last, _, thetas, _ = ClientStateStore(resumed.state_dir).load()
    assert last == 3
    with open(os.path.join(resumed.out_dir, "results.json")) as f:
        results = json.load(f)
    # client information (accuracy before FedBip) survives the resume
    assert results["clients"]["site-1"]["accuracy_before"] == pytest.approx(accuracy_local("site-1", 0))

    # an interrupted-and-resumed run ends exactly where an uninterrupted one does
    monkeypatch.setattr(
        controller_module,
        "initial_adapter",
        lambda path, lora, seed=0, head_labels=None, modality="text": make_theta0(seed),
    )
    straight = make_harness(num_rounds=4, name="straight").run()
    for site in SITES:
        assert_params_equal(resumed.controller.thetas[site], straight.controller.thetas[site])
        assert_params_equal(thetas[site], straight.controller.thetas[site])


def test_resume_from_a_corrupt_state_fails(make_harness):
    first = make_harness(num_rounds=1, name="first").run()
    _flip_a_byte(os.path.join(first.state_dir, ClientStateStore.file_name("site-2")))
    resumed = make_harness(num_rounds=3, name="resumed", resume_from=first.state_dir)
    with pytest.raises(ValueError, match="checksum"):
        resumed.run()
    assert resumed.sites.calls == []


def test_resume_after_the_last_round_only_validates(make_harness):
    first = make_harness(num_rounds=2, name="first").run()
    again = make_harness(num_rounds=2, name="again", resume_from=first.state_dir).run()
    assert again.sites.train_calls() == []
    assert sorted(c.targets[0] for c in again.sites.validate_calls()) == SITES
    for call in again.sites.validate_calls():
        site = call.targets[0]
        assert_params_equal({n: torch.from_numpy(a) for n, a in call.params.items()}, first.controller.thetas[site])


# -- the run key ------------------------------------------------------------------------------------------
def _run_keys(harness) -> set:
    return {c.meta.get(K.RUN_KEY) for c in harness.sites.calls}


def test_every_task_carries_the_run_key_that_the_state_keeps(make_harness):
    first = make_harness(num_rounds=2, name="first").run()
    (key,) = _run_keys(first)
    assert isinstance(key, str) and len(key) == 32, "one new key for the whole run, on train and validate tasks"
    assert {c.task for c in first.sites.calls} == {"train", "validate"}
    assert ClientStateStore(first.state_dir).load()[3][K.RUN_KEY] == key
    other = make_harness(num_rounds=1, name="other").run()
    assert _run_keys(other) != {key}, "another run gets another key"


def test_a_resumed_run_keeps_the_crashed_runs_key(make_harness):
    first = make_harness(num_rounds=1, name="first").run()
    (key,) = _run_keys(first)
    resumed = make_harness(num_rounds=3, name="resumed", resume_from=first.state_dir).run()
    assert _run_keys(resumed) == {key}
    assert ClientStateStore(resumed.state_dir).load()[3][K.RUN_KEY] == key
    again = make_harness(num_rounds=3, name="again", resume_from=first.state_dir).run()
    assert again.sites.train_calls()[0].round == 1 and _run_keys(again) == {key}


def test_a_state_without_a_run_key_resumes_with_a_new_one(make_harness):
    first = make_harness(num_rounds=1, name="first").run()
    theta0, thetas = ClientStateStore(first.state_dir).load()[1:3]
    ClientStateStore(first.state_dir).save(0, theta0, thetas, extra={})  # saved before run keys existed
    resumed = make_harness(num_rounds=2, name="resumed", resume_from=first.state_dir).run()
    (key,) = _run_keys(resumed)
    assert key and key not in _run_keys(first)
