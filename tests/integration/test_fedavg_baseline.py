"""The FedAvg baseline: NVFlare's own FedAvg workflow on FedBip's executor, then a final validate task."""

import json
import os

from safetensors.numpy import load_file

from fedbip_nvflare.constants import FedBipKeys as K


def test_fedavg_baseline_sends_everyone_the_same_average(tmp_path, minilm_path):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe

    recipe = FedBipRecipe(
        name="fedavg_it",
        aggregation="fedavg",
        num_rounds=2,
        min_clients=2,
        max_length=32,
        num_threads=1,
        data={"suite": "text-tasks", "n_train": 16, "n_test": 16, "seed": 0},
    )
    recipe.execute(SimEnv(num_clients=2, num_threads=2, workspace_root=str(tmp_path)))
    server = os.path.join(str(tmp_path), "fedavg_it", "server", "simulate_job", K.STATE_DIR)
    with open(os.path.join(server, K.RESULTS_FILE)) as f:
        results = json.load(f)
    assert results["method"] == "fedavg" and sorted(results["clients"]) == ["site-1", "site-2"]
    global_model = load_file(os.path.join(server, "global_model.safetensors"))
    for info in results["clients"].values():
        assert 0.0 <= info["accuracy"] <= 1.0 and 0.0 <= info["accuracy_before"] <= 1.0
        assert [h["round"] for h in info["history"]] == [0, 1]
        adapter = load_file(os.path.join(info["adapter_dir"], "adapter_model.safetensors"))
        assert set(adapter) == set(global_model)
        for name, value in global_model.items():
            assert (adapter[name] == value).all(), "every site validates the same averaged adapter"
