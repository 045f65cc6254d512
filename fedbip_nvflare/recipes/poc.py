"""NVFlare's POC mode through the Recipe API, with FedBip's components allow-listed.

NVFlare's ``PocEnv`` provisions the POC workspace again on every ``recipe.execute``, so an allow-list added by hand
after ``nvflare poc prepare`` (``fedbip allow-list``) is lost. Provisioning runs the builders its project file
lists: a project file with :class:`AllowListBuilder` allow-lists the package in every (re-)provisioned kit, for
``PocEnv(project_conf_path=...)`` and ``nvflare poc prepare -i`` alike.

    from fedbip_nvflare.recipes import fedbip_poc_env

    run = recipe.execute(fedbip_poc_env(num_clients=2))
    result = run.get_result()  # waits for the job, then stops POC (and removes its workspace)
"""

import os
from typing import List, Optional

from nvflare.apis.job_def import DEFAULT_STUDY
from nvflare.lighter.constants import ProvFileName
from nvflare.lighter.provision import gen_default_project_config
from nvflare.lighter.spec import Builder, Project, ProvisionContext
from nvflare.lighter.utils import load_yaml
from nvflare.recipe.poc_env import PocEnv
from nvflare.tool.poc.poc_commands import (
    get_poc_workspace,
    get_proj_admin,
    save_project_config,
    update_clients,
    update_server_name,
)

from fedbip_nvflare.recipes.fedbip import allow_fedbip_components

# The builder that writes each kit's local/resources.json.default, which AllowListBuilder extends.
STATIC_FILE_BUILDER = "nvflare.lighter.impl.static_file.StaticFileBuilder"


class AllowListBuilder(Builder):
    """Provisioning builder: allow-lists this package in the server's and every site's provisioned resources.

    Adds ``fedbip_nvflare.`` to ``class_allow_list`` in each kit's ``local/resources.json.default``, as NVFlare's
    CCBuilder extends it for confidential-computing sites (a site admin's ``fedbip allow-list`` writes
    ``resources.json`` instead). Every resources file NVFlare derives from the defaults keeps the entry, such as the
    POC server's ``resources.json`` that ``nvflare poc prepare`` writes after provisioning. List the builder in a
    project file's ``builders`` after ``StaticFileBuilder``, which writes the defaults; admin kits run no jobs and
    are left alone.
    """

    def build(self, project: Project, ctx: ProvisionContext):
        defaults = ProvFileName.RESOURCES_JSON_DEFAULT
        for participant in [project.get_server(), *project.get_clients()]:
            if participant is None:
                continue
            if not os.path.isfile(os.path.join(ctx.get_local_dir(participant), defaults)):
                raise RuntimeError(
                    f"AllowListBuilder found no local/{defaults} for {participant.name}: list it after "
                    f"{STATIC_FILE_BUILDER} in the project's builders"
                )
            allow_fedbip_components(ctx.get_ws_dir(participant), file=defaults)


def write_poc_project(path: str, num_clients: int = 2, clients: Optional[List[str]] = None) -> str:
    """Writes the project ``nvflare poc prepare -n`` provisions, plus :class:`AllowListBuilder`, to ``path``.

    That is NVFlare's sample project with the server named ``server``, the sites ``clients`` (default ``site-1`` ..
    ``site-<num_clients>``) and the builder right after ``StaticFileBuilder``. Give the file to
    ``PocEnv(project_conf_path=path)`` or ``nvflare poc prepare -i path``; keep it outside the POC workspace, which
    both remove (``nvflare poc prepare`` before it provisions, ``PocEnv`` when it stops a running POC or cleans up).

    Args:
        path: The project file to write.
        num_clients: Number of sites (when ``clients`` is not given).
        clients: The sites' names.

    Returns:
        ``path``.
    """
    if clients is not None and not clients:
        raise ValueError("clients must name at least one site")
    if not clients and (not isinstance(num_clients, int) or num_clients < 1):
        raise ValueError(f"num_clients must be an int >= 1, got {num_clients!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    gen_default_project_config("dummy_project.yml", path)
    project = update_clients(list(clients or []), num_clients, update_server_name(load_yaml(path)))
    builders = project["builders"]
    after = [i for i, b in enumerate(builders) if b.get("path") == STATIC_FILE_BUILDER]
    if not after:
        raise RuntimeError(f"NVFlare's sample project has no {STATIC_FILE_BUILDER} to put AllowListBuilder after")
    builders.insert(after[0] + 1, {"path": f"{AllowListBuilder.__module__}.{AllowListBuilder.__name__}"})
    save_project_config(project, path)
    return path


def fedbip_poc_env(
    num_clients: int = 2,
    clients: Optional[List[str]] = None,
    project_file: Optional[str] = None,
    gpu_ids: Optional[List[int]] = None,
    study: str = DEFAULT_STUDY,
    extra: Optional[dict] = None,
) -> PocEnv:
    """NVFlare's ``PocEnv`` for installed-package FedBip jobs: its POC allow-lists ``fedbip_nvflare.`` everywhere.

    ``recipe.execute(env)`` provisions the POC workspace (``$NVFLARE_POC_WORKSPACE``, else NVFlare's configured
    one, default ``/tmp/nvflare/poc``; ports 8002/8003) from the project file ``write_poc_project`` writes, after
    stopping and removing a POC still running there, starts the server and the sites and submits the job as the
    project admin (``admin@nvidia.com``); ``run.get_result()`` waits for it and stops POC.

    Args:
        num_clients: Number of sites (when ``clients`` is not given).
        clients: The sites' names (default ``site-1`` .. ``site-<num_clients>``).
        project_file: Where to write the project file (default: ``<POC workspace>_fedbip_project.yml``, next to the
            workspace, which NVFlare removes and provisions again).
        gpu_ids: GPUs to share among the sites (``PocEnv``'s ``gpu_ids``; default: CPU only).
        study: Study to tag the submitted jobs with.
        extra: ``PocEnv``'s extra environment properties (e.g. ``{"login_timeout": 30}``).

    Returns:
        The ``PocEnv``.
    """
    project_file = project_file or os.path.normpath(get_poc_workspace()) + "_fedbip_project.yml"
    write_poc_project(project_file, num_clients, clients)
    return PocEnv(
        num_clients=len(clients) if clients else num_clients,
        clients=clients,
        gpu_ids=gpu_ids,
        project_conf_path=project_file,
        username=get_proj_admin(load_yaml(project_file)),
        study=study,
        extra=extra,
    )
