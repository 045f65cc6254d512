"""Experiment tracking with MLflow (the README's `tracking="mlflow"`): a real SimEnv job's per-client metrics land in
the MLflow store NVFlare's receiver writes next to the server's job (`<server run dir>/mlflow.db`)."""

import os

import pytest

from fedbip_nvflare.constants import FedBipKeys as K

CLIENTS = ["site-1", "site-2"]


@pytest.fixture(scope="module")
def mlflow_runs(tmp_path_factory, minilm_path):
    pytest.importorskip("mlflow", reason="install the dev extras (pip install -e '.[dev]'), which include mlflow")
    from mlflow.tracking import MlflowClient
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare.recipes import FedBipRecipe

    workspace = str(tmp_path_factory.mktemp("mlflow"))
    recipe = FedBipRecipe(
        name="fedbip_mlflow",
        model="sentence-transformers/all-MiniLM-L6-v2",
        num_rounds=2,
        min_clients=2,
        data={"suite": "text-tasks", "n_train": 16, "n_test": 16, "seed": 0},
        max_length=32,
        num_threads=1,
        tracking="mlflow",
    )
    recipe.execute(SimEnv(num_clients=2, num_threads=2, workspace_root=workspace))
    store = os.path.join(workspace, "fedbip_mlflow", "server", "simulate_job", "mlflow.db")
    assert os.path.exists(store), "NVFlare's MLflow receiver wrote no store where the README says"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("fedbip_mlflow-experiment")
    assert experiment is not None
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}, client


def test_every_site_has_a_run_with_its_per_round_metrics(mlflow_runs):
    runs, client = mlflow_runs
    by_site = {site: [r for name, r in runs.items() if name.startswith(site + "-")] for site in CLIENTS}
    for site, found in by_site.items():
        assert len(found) == 1, f"{site}: {sorted(runs)}"
        run = found[0]
        assert {K.ACCURACY_RECEIVED, "train_loss", "final_accuracy"} <= set(run.data.metrics), sorted(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [0, 1], "one train_loss per round"
        assert all(0.0 <= m.value < 100.0 for m in history)
