"""Submit the FedBip job to a running NVFlare deployment as its admin, wait, collect the results, shut down.

Used by deploy/run_local.sh (provisioned kits) and deploy/run_poc.sh (the POC admin's kit); works the same
against a real deployment (give it your admin startup kit):

    python deploy/submit.py --admin-kit <admin startup kit folder> --username admin@fedbip.local --output results/
"""

import argparse
import glob
import json
import os
import sys

from nvflare.recipe.prod_env import ProdEnv

from fedbip_nvflare.client.audit import RECEIVED_FILE, ReceivedModelLog, received_model_problems
from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.results import format_table, load_results, write_results


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin-kit", required=True, help="the admin's startup kit folder (holds startup/)")
    p.add_argument("--username", default="admin@fedbip.local")
    p.add_argument("--num-clients", type=int, default=3)
    p.add_argument("--num-rounds", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=32, help="training examples per site (built-in suite)")
    p.add_argument("--test-examples", type=int, default=32)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the job")
    p.add_argument("--output", required=True, help="folder for the downloaded job result and results.json")
    p.add_argument("--shutdown", action="store_true", help="shut the server and the sites down afterwards")
    p.add_argument("--site-kits", default=None, help="folder holding the sites' kits (check their adapters)")
    p.add_argument("--sites", nargs="*", default=[], help="sites whose personalized adapter must exist")
    p.add_argument(
        "--audit",
        action="store_true",
        help="sites log a fingerprint of every model they receive and the server keeps what it sent; with "
        "--site-kits, check that every site received only its own models",
    )
    return p.parse_args()


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


def audit_received(result_dir: str, site_kits: str, sites, job_id: str, rounds: int) -> bool:
    """Checks (and prints) that every site received only its own models (see ``received_model_problems``)."""
    server_runs = glob.glob(os.path.join(result_dir, "**", "fedbip", "updates"), recursive=True)
    logs = {
        s: glob.glob(os.path.join(site_kits, s, job_id, "**", "fedbip", RECEIVED_FILE), recursive=True) for s in sites
    }
    if len(server_runs) != 1 or not all(len(found) == 1 for found in logs.values()):
        print(f"FAILED: audit files not found (server updates: {server_runs}, site logs: {logs})")
        return False
    site_runs = {s: os.path.dirname(os.path.dirname(found[0])) for s, found in logs.items()}
    problems = received_model_problems(os.path.dirname(os.path.dirname(server_runs[0])), site_runs, rounds)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print(f"audit: each of {', '.join(sites)} received only its own models ({rounds} rounds + validation)")
    return not problems


def main() -> int:
    args = parse_args()
    # Installed-package mode: the job ships no custom code; each site's local/fedbip_site.json (if any) supplies
    # its own data path and threads, which override the job's defaults below.
    recipe = FedBipRecipe(
        name="fedbip_prod",
        num_rounds=args.num_rounds,
        min_clients=args.num_clients,
        data={"suite": "text-tasks", "n_train": args.max_examples, "n_test": args.test_examples, "seed": 0},
        max_length=args.max_length,
        num_threads=1,
        log_updates=args.audit,
    )
    if args.audit:
        recipe.add_client_input_filter(ReceivedModelLog(), tasks=[K.TRAIN_TASK, K.VALIDATE_TASK])
    env = ProdEnv(startup_kit_location=args.admin_kit, username=args.username, login_timeout=30)
    run = recipe.execute(env)
    print(f"submitted job {run.get_job_id()}")
    result = run.get_result(timeout=args.timeout)
    status = run.get_status()
    print(f"job {run.get_job_id()}: status {status}, result downloaded to {result}")
    ok = result is not None and os.path.isdir(result) and "COMPLETED" in str(status)
    if ok:
        results = load_results(result)
        write_results(results, args.output)
        print(format_table(results))
        with open(os.path.join(args.output, "job.json"), "w") as f:
            json.dump({"job_id": run.get_job_id(), "status": str(status), "result_dir": result}, f, indent=2)
    if ok and args.site_kits:
        ok = not missing_adapters(args.site_kits, args.sites, run.get_job_id())
    if ok and args.audit and args.site_kits:
        ok = audit_received(result, args.site_kits, args.sites, run.get_job_id(), args.num_rounds)
    if args.shutdown:
        shutdown_all(args.admin_kit, args.username)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
