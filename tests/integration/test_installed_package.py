"""The package installed from its wheel, as deploy/run_netns.sh's hosts install it (``pip install --target``), with
no checkout of the repository on the path: the Client API job builds and exports, shipping the installed package's
script, and the shipped script (and the repository's bring-your-own-code example) runs on the installed package."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from exported_jobs import SCRIPT, assert_names_no_local_path, assert_ships_the_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = ["setup.py", "pyproject.toml", "README.md", "fedbip_nvflare"]  # what the wheel is built from
NAME = "fedbip_installed"

EXPORT = """
import json, sys
import fedbip_nvflare
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.recipes.fedbip import CLIENT_SCRIPT
for mode in ("in_process", "external"):
    recipe = FedBipRecipe(
        name="%s", num_rounds=1, min_clients=2, client_mode="client_api", launch_external_process=mode == "external",
        max_length=32, num_threads=1, data={"suite": "text-tasks", "n_train": 16, "n_test": 16},
    )
    recipe.export(mode)
print(json.dumps({"package": fedbip_nvflare.__file__, "script": CLIENT_SCRIPT}))
""" % NAME


def _python(args, pkgs: str, cwd: str) -> str:
    """Runs this venv's python on ``args`` with only the installed package on ``PYTHONPATH``; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": pkgs}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """This checkout's wheel (built offline with the venv's setuptools), installed with ``pip install --target``:
    the folder that holds the installed package."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"  # a copy, so that building writes nothing into the checkout
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = pip[:-1] + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "wheels"), "."]
    subprocess.run(build, cwd=str(src), check=True, capture_output=True, timeout=600)
    (wheel,) = os.listdir(root / "wheels")
    install = ["install", "--no-deps", "--no-index", "--target", str(root / "pkgs"), str(root / "wheels" / wheel)]
    subprocess.run(pip + install, check=True, capture_output=True, timeout=600)
    return str(root / "pkgs")


def test_the_installed_package_exports_the_client_api_job(installed, tmp_path):
    out = json.loads(_python(["-c", EXPORT], installed, str(tmp_path)).strip().splitlines()[-1])
    package = os.path.join(installed, "fedbip_nvflare")
    assert out["package"] == os.path.join(package, "__init__.py"), "the package came from its wheel"
    assert out["script"] == os.path.join(package, "client", SCRIPT), "the recipe ships the installed script"
    for mode in ("in_process", "external"):
        job = os.path.join(str(tmp_path), mode, NAME)
        assert_names_no_local_path(job, {REPO, os.path.realpath(REPO), installed, str(tmp_path)})
        assert_ships_the_script(os.path.join(job, "app"), out["script"], external=mode == "external")
    # the shipped script and the repository's example for bring-your-own-code jobs run on the installed package
    for script in (os.path.join(str(tmp_path), "in_process", NAME, "app", "custom", SCRIPT), f"{REPO}/custom/{SCRIPT}"):
        assert "--site-state-root" in _python([script, "--help"], installed, str(tmp_path)), script
