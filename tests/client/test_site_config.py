"""A site's own fedbip_site.json overrides the job's data and resources; the Client API script finds its site."""

import json

import pytest

from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.client.site_config import SITE_CONFIG_FILE, app_workspace, apply_site_config

JOB_DATA = {"suite": "text-tasks", "n_train": 300}


def _write(folder, content):
    path = folder / SITE_CONFIG_FILE
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_without_a_site_file_the_job_decides(tmp_path):
    settings = TrainSettings(num_threads=4)
    data, out, source = apply_site_config(str(tmp_path), JOB_DATA, settings)
    assert data == JOB_DATA and out == settings and source is None


def test_the_site_file_overrides_data_and_resources(tmp_path):
    site_data = {"train_path": "/data/site/train.csv", "test_path": "/data/site/test.csv"}
    path = _write(tmp_path, {"data": site_data, "num_threads": 2, "batch_size": 8})
    data, settings, source = apply_site_config(str(tmp_path), JOB_DATA, TrainSettings(num_threads=4, local_epochs=3))
    assert data == site_data and source == path
    assert (settings.num_threads, settings.batch_size, settings.local_epochs) == (2, 8, 3)


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "is not valid JSON"),
        ({"learning_rate": 1.0}, "unknown keys ['learning_rate']"),
        ({"data": "/data/train.csv"}, "'data' must be a data configuration object"),
        ([1, 2], "must hold a JSON object"),
    ],
)
def test_bad_site_files_are_named(tmp_path, content, message):
    _write(tmp_path, content)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_site_config(str(tmp_path), JOB_DATA, TrainSettings())


def test_a_client_api_script_finds_its_site_workspace_from_its_app_folder(tmp_path):
    for folder in ("startup", "local", "job-1/app_site-a/custom"):
        (tmp_path / folder).mkdir(parents=True)
    app = str(tmp_path / "job-1" / "app_site-a")
    workspace = app_workspace(app, "job-1", "site-a")
    assert workspace.get_site_config_dir() == str(tmp_path / "local")
    assert workspace.get_run_dir("job-1") == str(tmp_path / "job-1")
    assert app_workspace(app, "job-2", "site-a") is None, "another job's app"
    assert app_workspace(app, "job-1", "site-b") is None, "another site's app"
    (tmp_path / "startup").rmdir()
    assert app_workspace(app, "job-1", "site-a") is None, "not a site workspace (no startup folder)"
