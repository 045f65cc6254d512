"""The configuration-error sweep (fast, no simulator): every error is raised before any training, naming the problem.

``python -m benchmarks.faults --scenarios config`` runs the same cases as real SimEnv jobs; here each case calls the
code a job runs first: the recipe's constructor, the server controller's start (θ̄⁰ is built before any task is
sent) and the site session a site builds on its first task (before it trains).
"""

import os

import pytest
from nvflare.apis.signal import Signal

from benchmarks import faults  # noqa: E402
from fedbip_nvflare.client.settings import TrainSettings  # noqa: E402
from fedbip_nvflare.client.site import SiteSession  # noqa: E402
from fedbip_nvflare.models import LoraSettings, initial_adapter  # noqa: E402
from fedbip_nvflare.server.controller import FedBipController  # noqa: E402

TINY = {"suite": "text-tasks", "n_train": 8, "n_test": 8, "seed": 0}


@pytest.mark.parametrize("case", sorted(faults.CONSTRUCTION_NAMES))
def test_bad_recipe_options_fail_at_construction_naming_the_option(case):
    (result,) = [c for c in faults.construction_errors() if c["case"] == case]
    assert result["error"] in ("TypeError", "ValueError"), result
    assert faults.CONSTRUCTION_NAMES[case] in result["message"], result["message"]


def _start_controller(tmp_path, **kwargs):
    """Runs a FedBipController's workflow with no engine: records the tasks it would send."""
    controller = FedBipController(num_rounds=1, **kwargs)
    sent = []
    controller.get_run_dir = lambda: str(tmp_path)
    controller.sample_clients = lambda num_clients=None: ["site-1"]
    controller.send_model = lambda **task: sent.append(task)
    controller.get_num_standing_tasks = lambda: 0
    controller.abort_signal = Signal()
    return controller, sent


def test_a_model_folder_that_does_not_exist_stops_the_server_before_any_task(tmp_path):
    missing = str(tmp_path / "no-such-model")
    controller, sent = _start_controller(tmp_path, model=missing)
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        controller.run()
    assert missing in str(error.value)
    assert sent == []


def test_lora_target_modules_that_match_nothing_stop_the_server_before_any_task(tmp_path, minilm_path):
    controller, sent = _start_controller(tmp_path, model=minilm_path, target_modules=["no_such_module"])
    with pytest.raises(ValueError, match="no_such_module"):
        controller.run()
    assert sent == []


def _session(tmp_path, minilm_path, data, r=8):
    lora = LoraSettings(r=r, alpha=16, dropout=0.0, target_modules=("query", "value"))
    settings = TrainSettings(max_length=16, num_threads=1)
    return SiteSession("site-1", str(tmp_path), minilm_path, data, lora, settings)


def test_an_unknown_data_key_fails_the_site_before_it_trains(tmp_path, minilm_path):
    with pytest.raises(ValueError, match=r"unknown data config keys \['n_trian'\]"):
        _session(tmp_path, minilm_path, {**TINY, "n_trian": 8})


def test_a_missing_data_file_fails_the_site_before_it_trains(tmp_path, minilm_path):
    path = str(tmp_path / "no_such_file.csv")
    with pytest.raises(FileNotFoundError, match="no_such_file.csv"):
        _session(tmp_path, minilm_path, {"train_path": path})


def test_a_site_with_another_lora_rank_refuses_the_servers_adapter_before_training(tmp_path, minilm_path):
    session = _session(tmp_path, minilm_path, TINY, r=4)
    theta0 = initial_adapter(minilm_path, LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=("query", "value")))
    with pytest.raises(ValueError, match="has shape"):
        session.train({n: t.numpy() for n, t in theta0.items()}, 0)
    assert not os.path.exists(session.history_path), "the site trained although its adapter does not match"
