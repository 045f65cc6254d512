"""The Client API job travels: its folder names no path of the author's machine, it runs after being moved elsewhere
(in process and as an external process), and the script applies each site's own ``local/fedbip_site.json``."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from exported_jobs import assert_names_no_local_path, assert_ships_the_script

from fedbip_nvflare.client.site_config import SITE_CONFIG_FILE
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.recipes.fedbip import CLIENT_SCRIPT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
SITES = ["site-1", "site-2"]
NAME = "fedbip_api_paths"
TINY = {"suite": "text-tasks", "n_train": 16, "n_test": 16, "seed": 0}
SITE_FILE_ROWS = 12  # rows of the training file each site's fedbip_site.json names


def _export(folder, external: bool) -> str:
    """The tiny Client API job, exported; site-1's job data points at nothing (a relative path no site has)."""
    recipe = FedBipRecipe(
        name=NAME,
        num_rounds=1,
        min_clients=2,
        client_mode="client_api",
        launch_external_process=external,
        max_length=32,
        num_threads=1,
        data=TINY,
        per_site_config={"site-1": {"data": {"train_path": "no-such-folder/train.csv"}}, "site-2": {}},
    )
    recipe.export(str(folder))
    return os.path.join(str(folder), NAME)


@pytest.mark.parametrize("external", [False, True], ids=["in-process", "external-process"])
def test_the_exported_job_ships_its_script_and_names_no_local_path(tmp_path, external):
    job = _export(tmp_path / "export", external)
    machine_paths = {REPO, os.path.realpath(REPO), str(tmp_path), os.path.expanduser("~"), sys.prefix}
    configs = assert_names_no_local_path(job, machine_paths)
    assert len(configs) == 2 + len(SITES), configs  # meta.json, the server's config and each site's
    for site in SITES:
        assert_ships_the_script(os.path.join(job, f"app_{site}"), CLIENT_SCRIPT, external)


def _site_files(folder) -> dict:
    """A site's own train/test CSV files and the data configuration naming them."""
    os.makedirs(folder)
    texts = ["good fine great nice", "bad awful poor sad"]
    rows = {"train": SITE_FILE_ROWS, "test": 6}
    paths = {}
    for split, n in rows.items():
        path = os.path.join(folder, f"own_{split}.csv")
        with open(path, "w") as f:
            f.write("text,label\n" + "".join(f"{texts[i % 2]} {i},{i % 2}\n" for i in range(n)))
        paths[f"{split}_path"] = path
    return paths


@pytest.mark.parametrize("external", [False, True], ids=["in-process", "external-process"])
def test_the_moved_job_runs_with_the_sites_own_configuration(tmp_path, minilm_path, external):
    exported = _export(tmp_path / "export", external)
    job = str(tmp_path / "elsewhere" / "job")
    shutil.move(exported, job)  # the job folder as a site receives it: not where it was built
    shutil.rmtree(tmp_path / "export")
    workspace = tmp_path / "ws"
    site_file = workspace / "local" / SITE_CONFIG_FILE  # the simulator gives every site a copy of <ws>/local
    site_file.parent.mkdir(parents=True)
    site_file.write_text(json.dumps({"data": _site_files(str(tmp_path / "site_data")), "num_threads": 1}))

    proc = subprocess.run(
        [os.path.join(BIN, "nvflare"), "simulator", job, "-w", str(workspace), "-n", "2", "-t", "2"],
        cwd=str(tmp_path / "elsewhere"),
        capture_output=True,
        text=True,
        timeout=600,
        # a site's `python3` is the one its package is installed in (an external-process trainer runs `python3`)
        env=dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", "")),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    with open(os.path.join(str(workspace), "server", "simulate_job", "fedbip", K.RESULTS_FILE)) as f:
        results = json.load(f)["clients"]
    assert sorted(results) == SITES, results
    for site in SITES:
        info = results[site]
        assert "error" not in info, info
        assert info[K.TASK] == "own_train" and info[K.N_TRAIN] == SITE_FILE_ROWS, info
        run_dir = os.path.join(str(workspace), site, "simulate_job")
        adapter = info[K.ADAPTER_DIR]
        assert adapter.startswith(os.path.join(run_dir, K.STATE_DIR) + os.sep), adapter  # the site's state: its run
        assert os.path.isfile(os.path.join(adapter, "adapter_config.json")), os.listdir(adapter)
        with open(os.path.join(str(workspace), site, "log.txt")) as f:
            log = f.read()
        applied = os.path.join(str(workspace), site, "local", SITE_CONFIG_FILE)
        assert f"site configuration from {applied}" in log, log[-3000:]
