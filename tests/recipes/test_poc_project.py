"""POC mode through the Recipe API: the provisioning builder that allow-lists the package, the project file, the
PocEnv (construction and provisioning; the run is tests/integration/test_poc.py)."""

import json
import os

import pytest
from nvflare.lighter.provision import prepare_project
from nvflare.lighter.spec import ProvisionContext
from nvflare.lighter.utils import load_yaml
from nvflare.recipe.poc_env import PocEnv
from nvflare.tool.poc.poc_commands import get_prod_dir, prepare_poc_provision

from fedbip_nvflare.recipes import AllowListBuilder, fedbip_poc_env, write_poc_project

BUILDER = "fedbip_nvflare.recipes.poc.AllowListBuilder"


def _fake_provisioning(tmp_path):
    """A project and provisioning context whose kits hold what StaticFileBuilder writes before the builder runs."""
    project = prepare_project(load_yaml(write_poc_project(str(tmp_path / "project.yml"), num_clients=1)))
    ctx = ProvisionContext(str(tmp_path / "ws"), project)
    for participant in project.get_all_participants():
        local = ctx.get_local_dir(participant)
        os.makedirs(local)
        with open(os.path.join(local, "resources.json.default"), "w") as f:
            json.dump({"format_version": 2, "class_allow_list": ["nvflare.app_common."], "components": []}, f)
    return project, ctx


def test_builder_adds_the_package_to_the_server_and_site_kits_defaults(tmp_path):
    project, ctx = _fake_provisioning(tmp_path)

    AllowListBuilder().build(project, ctx)

    expected = (
        "{\n"
        '  "format_version": 2,\n'
        '  "class_allow_list": [\n'
        '    "nvflare.app_common.",\n'
        '    "fedbip_nvflare."\n'
        "  ],\n"
        '  "components": []\n'
        "}"
    )
    wip = tmp_path / "ws" / "wip"
    for name in ("server", "site-1"):
        assert sorted(os.listdir(wip / name / "local")) == ["resources.json.default"], name
        with open(wip / name / "local" / "resources.json.default") as f:
            assert f.read() == expected, name
    for admin in ("admin@nvidia.com", "org-admin@nvidia.com", "lead@nvidia.com"):  # admin kits run no jobs
        with open(wip / admin / "local" / "resources.json.default") as f:
            assert json.load(f)["class_allow_list"] == ["nvflare.app_common."], admin


def test_builder_needs_the_static_file_builders_defaults(tmp_path):
    project, ctx = _fake_provisioning(tmp_path)
    os.remove(os.path.join(ctx.get_local_dir(project.get_clients()[0]), "resources.json.default"))
    with pytest.raises(RuntimeError, match="no local/resources.json.default for site-1: list it after"):
        AllowListBuilder().build(project, ctx)


def test_project_file_is_the_default_poc_project_plus_the_builder(tmp_path):
    project = load_yaml(write_poc_project(str(tmp_path / "sub" / "project.yml"), num_clients=3))
    builders = [b["path"].rsplit(".", 1)[-1] for b in project["builders"]]
    assert builders == ["WorkspaceBuilder", "StaticFileBuilder", "AllowListBuilder", "CertBuilder", "SignatureBuilder"]
    assert project["builders"][2] == {"path": BUILDER}
    kinds = [(p["type"], p["name"]) for p in project["participants"]]
    assert [n for t, n in kinds if t == "server"] == ["server"]
    assert [n for t, n in kinds if t == "client"] == ["site-1", "site-2", "site-3"]
    named = load_yaml(write_poc_project(str(tmp_path / "named.yml"), clients=["a", "b"]))
    assert [p["name"] for p in named["participants"] if p["type"] == "client"] == ["a", "b"]
    with pytest.raises(ValueError, match="num_clients must be an int >= 1"):
        write_poc_project(str(tmp_path / "bad.yml"), num_clients=0)
    with pytest.raises(ValueError, match="clients must name at least one site"):
        write_poc_project(str(tmp_path / "bad.yml"), clients=[])


def test_every_provisioning_from_the_project_file_allow_lists_the_package(tmp_path):
    project_file = write_poc_project(str(tmp_path / "project.yml"), num_clients=2)
    workspace = str(tmp_path / "poc")
    for _ in range(2):  # PocEnv provisions again on every execute
        prepare_poc_provision([], 2, workspace, None, project_conf_path=project_file)
        prod = get_prod_dir(workspace, "example_project")
        # the server's resources.json is the one NVFlare's POC writes from the defaults after provisioning
        for name, file in (
            ("server", "resources.json"),
            ("site-1", "resources.json.default"),
            ("site-2", "resources.json.default"),
        ):
            with open(os.path.join(prod, name, "local", file)) as f:
                allow = json.load(f)["class_allow_list"]
            assert allow[-1] == "fedbip_nvflare." and "fedbip_nvflare." not in allow[:-1], name
            assert any(entry.startswith("nvflare.") for entry in allow), "NVFlare's default list is kept"
        assert not os.path.exists(os.path.join(prod, "site-1", "local", "resources.json"))
    assert sorted(os.listdir(os.path.join(workspace, "example_project"))) == ["prod_00", "prod_01", "state"]


def test_poc_env_uses_the_project_file_next_to_the_poc_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("NVFLARE_POC_WORKSPACE", str(tmp_path / "poc"))
    env = fedbip_poc_env(clients=["site-a", "site-b"], extra={"login_timeout": 30})
    assert isinstance(env, PocEnv)
    assert env.poc_workspace == str(tmp_path / "poc")
    assert env.project_conf_path == str(tmp_path / "poc_fedbip_project.yml")
    assert env.username == "admin@nvidia.com" and env.clients == ["site-a", "site-b"] and env.num_clients == 2
    assert env.get_extra_prop("login_timeout") == 30
    project = load_yaml(env.project_conf_path)
    assert {"path": BUILDER} in project["builders"]
    own = fedbip_poc_env(num_clients=3, project_file=str(tmp_path / "mine.yml"))
    assert own.project_conf_path == str(tmp_path / "mine.yml") and own.num_clients == 3
    assert len([p for p in load_yaml(own.project_conf_path)["participants"] if p["type"] == "client"]) == 3
