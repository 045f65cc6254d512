"""The Client API script's helpers (``fedbip_nvflare.client.fedbip_client``) and the repository's example script for
bring-your-own-code jobs, which runs the package's script (the jobs it runs in are integration tests)."""

import importlib.util
import json
import os

import pytest

from fedbip_nvflare.client import fedbip_client
from fedbip_nvflare.client.site_config import SITE_CONFIG_FILE
from fedbip_nvflare.constants import FedBipKeys as K

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(monkeypatch, script: str):
    monkeypatch.setattr("sys.argv", [script, "--model", "m", "--data", "suite=text-tasks", "--data", "n_train=16"])
    return fedbip_client.parse_args()


def test_data_entries_become_numbers_where_they_read_as_numbers():
    data = fedbip_client.parse_data(["n_train=16", "holdout=0.5", "train_path=/data/a.csv", "empty="])
    assert data == {"n_train": 16, "holdout": 0.5, "train_path": "/data/a.csv", "empty": ""}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        fedbip_client.parse_data(["n_train"])


def test_site_setup_finds_the_site_workspace_from_the_script_it_runs(tmp_path, monkeypatch):
    for folder in ("startup", "local", "job-1/app_site-a/custom"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "local" / SITE_CONFIG_FILE).write_text(json.dumps({"num_threads": 2}))
    script = str(tmp_path / "job-1" / "app_site-a" / "custom" / "fedbip_client.py")
    data, settings, state_dir, snapshot_root = fedbip_client.site_setup(
        _args(monkeypatch, script), "site-a", "job-1", script
    )
    assert data == {"suite": "text-tasks", "n_train": 16} and settings.num_threads == 2, "the site file applies"
    assert state_dir == str(tmp_path / "job-1" / K.STATE_DIR)
    assert snapshot_root == str(tmp_path / K.SITE_STATE_DIR)

    monkeypatch.chdir(tmp_path)  # the package's own file is in no site workspace: the working directory holds state
    _, settings, state_dir, snapshot_root = fedbip_client.site_setup(
        _args(monkeypatch, script), "site-a", "job-1", fedbip_client.__file__
    )
    assert settings.num_threads is None, "no site file applies"
    assert state_dir == str(tmp_path / K.STATE_DIR / "site-a") and snapshot_root == str(tmp_path / K.SITE_STATE_DIR)


def test_the_bring_your_own_code_example_runs_the_package_script():
    spec = importlib.util.spec_from_file_location("byoc_example", os.path.join(REPO, "custom", "fedbip_client.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # not as __main__: it only imports
    assert example.main is fedbip_client.main, "the example holds no second copy of the script"
