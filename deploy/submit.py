"""Submit the FedBip job to a running NVFlare deployment as its admin, wait, collect the results, shut down.

Used by deploy/run_local.sh (provisioned kits) and deploy/run_poc.sh (the POC admin's kit); works the same
against a real deployment (give it your admin startup kit):

    python deploy/submit.py --admin-kit <admin startup kit folder> --username admin@fedbip.local --output results/

With NVFlare's own CLI instead (deploy/run_netns.sh): export the job folder, submit, wait and download with
``nvflare job``, then check what came back:

    python deploy/submit.py --admin-kit <kit> --export --export-dir job/   # job/fedbip_prod, for `nvflare job submit`
    python deploy/submit.py --check-job <job id> --result <downloaded folder> --output results/ \
        --site-kits <kits> --sites site-1 site-2 site-3 --audit
"""

import argparse
import glob
import json
import os
import sys
from typing import List, Optional

from nvflare.recipe.prod_env import ProdEnv

from fedbip_nvflare.client.audit import (
    RECEIVED_FILE,
    SENT_FILE,
    ReceivedModelLog,
    exchange_log,
    received_model_problems,
)
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.results import format_table, load_results, write_results


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin-kit", default=None, help="the admin's startup kit folder (holds startup/)")
    p.add_argument("--username", default="admin@fedbip.local")
    p.add_argument("--name", default="fedbip_prod", help="job name")
    p.add_argument("--num-clients", type=int, default=3)
    p.add_argument("--min-clients", type=int, default=None, help="least valid updates per round (default: all)")
    p.add_argument("--num-rounds", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=32, help="training examples per site (built-in suite)")
    p.add_argument("--test-examples", type=int, default=32)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--train-timeout", type=int, default=0, help="seconds per train task (0: no limit)")
    p.add_argument("--validate-timeout", type=int, default=0, help="seconds for the validate task (0: no limit)")
    p.add_argument(
        "--resume-from", default=None, help="the server's state folder of an interrupted run (a path on the server)"
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the job")
    p.add_argument("--output", default=None, help="folder for the downloaded job result and results.json")
    p.add_argument("--shutdown", action="store_true", help="shut the server and the sites down afterwards")
    p.add_argument("--site-kits", default=None, help="folder holding the sites' kits (check their adapters)")
    p.add_argument("--sites", nargs="*", default=[], help="sites whose personalized adapter must exist")
    p.add_argument(
        "--audit",
        action="store_true",
        help="sites log a fingerprint of every model they receive and send, and the server keeps what it sent; "
        "with --site-kits, check that every site received only its own models and print who sent what to whom",
    )
    p.add_argument(
        "--check-job",
        metavar="JOB_ID",
        default=None,
        help="do not submit: check job JOB_ID, run elsewhere (`nvflare job submit`) and downloaded to --result",
    )
    p.add_argument("--result", default=None, help="with --check-job: the job's downloaded result folder")
    p.add_argument("--status", default="", help="with --check-job: the job's status (`nvflare job meta`)")
    p.add_argument("--first-round", type=int, default=0, help="the audit's first round (a resumed job's)")
    p.add_argument(
        "--accept-status",
        nargs="*",
        default=[],
        help="job statuses accepted besides a completed one (e.g. FINISHED:ABNORMAL, which NVFlare gives a job "
        "whose site crashed even when the workflow finished)",
    )
    p.add_argument(
        "--lost-sites", nargs="*", default=[], help="sites that crashed during the job: no adapter or audit expected"
    )
    args = p.parse_args(argv)
    if args.check_job is None and args.admin_kit is None:
        p.error("--admin-kit is required (unless --check-job JOB_ID --result DIR)")
    if args.output is None and not exporting():
        p.error("--output is required (unless --export)")
    if args.check_job is not None and args.result is None:
        p.error("--check-job needs --result (the folder `nvflare job download -o` wrote)")
    return args


def shutdown_all(admin_kit: str, username: str) -> None:
    """Asks the server and every site to shut down (project admin right)."""
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    session = new_secure_session(username, admin_kit, timeout=30)
    try:
        session.shutdown("all")
    except Exception as e:  # the server may go away before it answers: the start scripts' owners still stop it
        print(f"shutdown request sent; no confirmation ({e})")
    finally:
        session.close()


def missing_adapters(site_kits: str, sites, job_id: str) -> list:
    """The sites among ``sites`` with no personalized adapter of ``job_id`` in their own workspace (each found
    one is printed)."""
    missing = []
    for site in sites:
        found = sorted(glob.glob(os.path.join(site_kits, site, job_id, "**", "personalized_adapter"), recursive=True))
        if found and os.path.isfile(os.path.join(found[0], "adapter_model.safetensors")):
            print(f"{site} keeps its personalized adapter in {found[0]}")
        else:
            print(f"FAILED: {site} has no personalized adapter for job {job_id}")
            missing.append(site)
    return missing


def server_name(admin_kit: Optional[str]) -> str:
    """The server's name in the project, from the admin's startup kit ("server" without a kit)."""
    try:
        with open(os.path.join(admin_kit or "", "startup", "fed_admin.json")) as f:
            return json.load(f)["admin"]["server_identity"]
    except (OSError, KeyError, ValueError):
        return "server"


def audit_received(
    result_dir: str,
    site_kits: str,
    sites,
    job_id: str,
    rounds: int,
    first_round: int = 0,
    lost=(),
    server: str = "server",
) -> bool:
    """Checks (and prints) that every site received only its own models (see ``received_model_problems``), and
    prints who sent what to whom, by digest (see ``exchange_log``; ``server`` names the server). Sites in ``lost``
    crashed during the job: the log shows what they got, the check leaves them out."""
    server_runs = glob.glob(os.path.join(result_dir, "**", "fedbip", "updates"), recursive=True)
    logs = {
        s: glob.glob(os.path.join(site_kits, s, job_id, "**", "fedbip", RECEIVED_FILE), recursive=True) for s in sites
    }
    if len(server_runs) != 1 or not all(len(found) == 1 for s, found in logs.items() if s not in lost):
        print(f"FAILED: audit files not found (server updates: {server_runs}, site logs: {logs})")
        return False
    server_run = os.path.dirname(os.path.dirname(server_runs[0]))
    site_runs = {s: os.path.dirname(os.path.dirname(found[0])) for s, found in logs.items() if found}
    print("who sent what to whom (digest: SHA-256 of the parameters, first 12 hex digits):")
    for line in exchange_log(server_run, site_runs, server):
        print("  " + line)
    audited = {s: run for s, run in site_runs.items() if s not in lost}
    problems = received_model_problems(server_run, audited, rounds, first_round)
    for problem in problems:
        print(f"FAILED: {problem}")
    span = f"{rounds} rounds" if first_round == 0 else f"rounds {first_round}-{rounds - 1}"
    if not problems:
        print(f"audit: each of {', '.join(audited)} received only its own models ({span} + validation)")
    return not problems


def build_recipe(args: argparse.Namespace) -> FedBipRecipe:
    """The FedBip job of the command line (installed-package mode: the job ships no custom code).

    Each site's ``local/fedbip_site.json`` (if any) supplies its own data path and threads, which override the job's
    defaults. With ``--audit`` every site logs a fingerprint of each model it receives and sends.
    """
    recipe = FedBipRecipe(
        name=args.name,
        num_rounds=args.num_rounds,
        min_clients=args.min_clients or args.num_clients,
        data={"suite": "text-tasks", "n_train": args.max_examples, "n_test": args.test_examples, "seed": 0},
        max_length=args.max_length,
        num_threads=1,
        train_timeout=args.train_timeout,
        validate_timeout=args.validate_timeout,
        resume_from=args.resume_from,
        log_updates=args.audit,
    )
    if args.audit:
        recipe.add_client_input_filter(ReceivedModelLog(), tasks=[K.TRAIN_TASK, K.VALIDATE_TASK])
        recipe.add_client_output_filter(ReceivedModelLog(SENT_FILE), tasks=[K.TRAIN_TASK])
    return recipe


def check_job(args: argparse.Namespace, job_id: str, status: str, result: Optional[str]) -> bool:
    """Checks a finished job and prints what it found: results (written to ``--output``), adapters, audit."""
    finished = "COMPLETED" in str(status) or str(status) in args.accept_status
    ok = result is not None and os.path.isdir(result) and finished
    if not ok:
        print(f"FAILED: job {job_id} ended {status or 'with no status'} (result: {result})")
    if ok:
        results = load_results(result)
        write_results(results, args.output)
        print(format_table(results))
        with open(os.path.join(args.output, "job.json"), "w") as f:
            json.dump({"job_id": job_id, "status": str(status), "result_dir": result}, f, indent=2)
    if ok and args.site_kits:
        ok = not missing_adapters(args.site_kits, [s for s in args.sites if s not in args.lost_sites], job_id)
    if ok and args.audit and args.site_kits:
        ok = audit_received(
            result,
            args.site_kits,
            args.sites,
            job_id,
            args.num_rounds,
            args.first_round,
            args.lost_sites,
            server_name(args.admin_kit),
        )
    return ok


def exporting() -> bool:
    """Whether NVFlare's recipe arguments ``--export [--export-dir DIR]`` were given: NVFlare takes them off the
    command line when ``nvflare.recipe`` is imported, and ``recipe.execute`` then exports the job folder instead."""
    from nvflare.recipe.spec import _peek_recipe_args

    return bool(_peek_recipe_args()[0])


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.check_job:
        return 0 if check_job(args, args.check_job, args.status, args.result) else 1
    env = ProdEnv(startup_kit_location=args.admin_kit, username=args.username, login_timeout=30)
    run = build_recipe(args).execute(env)  # with --export, NVFlare exports the job folder and exits here
    print(f"submitted job {run.get_job_id()}")
    result = run.get_result(timeout=args.timeout)
    status = run.get_status()
    print(f"job {run.get_job_id()}: status {status}, result downloaded to {result}")
    ok = check_job(args, run.get_job_id(), status, result)
    if args.shutdown:
        shutdown_all(args.admin_kit, args.username)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
