"""FedBip dropped into NVFlare's stock FedAvgRecipe: one call turns the FedAvg job into a personalized one.

The clients run FedBip's Client API script (shipped with the job as custom/fedbip_client.py, named relative to the
app's custom folder) and return DIFFs, as many FedAvg jobs do; the server keeps one personalized adapter per client
and sends each client only its own.

With ``--exchange pytorch`` the job is NVFlare's PyTorch FedAvgRecipe instead: its PTFileModelPersistor serves θ̄⁰
from ``fedbip_nvflare.models.AdapterModule`` and saves the consensus as a .pt file, and torch tensors travel both
ways. ``--tracking tensorboard`` adds NVFlare's TensorBoard receiver: the sites' metrics and the server's
``similarity/<site>`` and ``weights/<site>`` rows land in ``<server run dir>/tb_events``.

python jobs/fedavg_dropin/job.py                            # SimEnv run, per-client table
python jobs/fedavg_dropin/job.py --exchange pytorch --tracking tensorboard
python jobs/fedavg_dropin/job.py --export --export-dir D    # the folder `nvflare simulator` takes
"""

import argparse
import sys

from nvflare.client.config import ExchangeFormat, TransferType
from nvflare.fuel.utils.constants import FrameworkType
from nvflare.recipe.fedavg import FedAvgRecipe
from nvflare.recipe.sim_env import SimEnv

from fedbip_nvflare import add_fedbip_personalization
from fedbip_nvflare.client.audit import ReceivedModelLog
from fedbip_nvflare.data import check_data_config
from fedbip_nvflare.recipes.fedbip import CLIENT_SCRIPT, ShipsClientScript, client_script_args
from fedbip_nvflare.results import format_table, run_job, write_results
from fedbip_nvflare.server.persistor import AdapterPersistor
from fedbip_nvflare.tracking import TRACKING_TYPES

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class DropinRecipe(ShipsClientScript, FedAvgRecipe):
    """NVFlare's FedAvgRecipe, shipping FedBip's Client API script with the job."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-clients", type=int, default=4)
    p.add_argument("--num-rounds", type=int, default=3)
    p.add_argument("--max-examples", type=int, default=100, help="training examples per client")
    p.add_argument("--test-examples", type=int, default=200, help="test examples per client")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=MODEL, help="HF model id or local folder")
    p.add_argument("--suite", default="text-tasks")
    p.add_argument("--layerwise", action="store_true", help="FedBip-L")
    p.add_argument("--transfer", default="DIFF", choices=["DIFF", "FULL"], help="what the clients send back")
    p.add_argument(
        "--exchange",
        default="numpy",
        choices=["numpy", "pytorch"],
        help="numpy: FedAvgRecipe with FedBip's AdapterPersistor; pytorch: the PyTorch FedAvgRecipe with NVFlare's "
        "PTFileModelPersistor, torch tensors both ways",
    )
    p.add_argument("--tracking", default=None, choices=TRACKING_TYPES, help="NVFlare experiment tracking receiver")
    p.add_argument("--audit", action="store_true", help="sites log a fingerprint of every model they receive")
    p.add_argument("--log-updates", action="store_true", help="the server saves what each client sent and got")
    p.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads per client")
    p.add_argument("--workspace", default="/tmp/nvflare/fedbip_dropin", help="simulator workspace root")
    p.add_argument("--export", action="store_true", help="only export the job folder")
    p.add_argument("--export-dir", default="jobs/fedavg_dropin/job_folder")
    return p.parse_args()


def build_recipe(args) -> FedAvgRecipe:
    """NVFlare's own FedAvgRecipe (or its PyTorch variant) on FedBip's Client API script, with FedBip dropped in;
    the script travels with the job (``ShipsClientScript``), so the exported job names no path of this machine."""
    client = {
        "model": args.model,
        "data": check_data_config(
            {
                "suite": args.suite,
                "n_train": args.max_examples,
                "n_test": args.test_examples,
                "seed": args.seed,
                "num_clients": args.num_clients,
            }
        ),
        "max_length": args.max_length,
        "num_threads": args.torch_threads,
        "seed": args.seed,
    }
    common = {
        "name": "fedavg_dropin",
        "min_clients": args.num_clients,
        "num_rounds": args.num_rounds,
        "train_script": CLIENT_SCRIPT,
        "train_args": client_script_args(client),
        "params_transfer_type": TransferType(args.transfer),
    }
    if args.exchange == "pytorch":
        from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe as PTFedAvgRecipe

        class PTDropinRecipe(ShipsClientScript, PTFedAvgRecipe):
            """NVFlare's PyTorch FedAvgRecipe, shipping FedBip's Client API script with the job."""

        # NVFlare builds PTFileModelPersistor(model=AdapterModule(...)) with numpy conversion off for PYTORCH
        adapter = {"path": "fedbip_nvflare.models.AdapterModule", "args": {"model": args.model, "seed": args.seed}}
        recipe = PTDropinRecipe(model=adapter, server_expected_format=ExchangeFormat.PYTORCH, **common)
    else:
        recipe = DropinRecipe(
            framework=FrameworkType.RAW, model_persistor=AdapterPersistor(model=args.model, seed=args.seed), **common
        )
    if args.tracking is not None:
        from nvflare.recipe.utils import add_experiment_tracking

        add_experiment_tracking(recipe, args.tracking)
    add_fedbip_personalization(recipe, final_validation=True, layerwise=args.layerwise, log_updates=args.log_updates)
    if args.audit:
        recipe.add_client_input_filter(ReceivedModelLog(), tasks=["train", "validate"])
    return recipe


def main():
    args = parse_args()
    if args.export:
        try:
            build_recipe(args).export(args.export_dir)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"exported to {args.export_dir}")
        return 0
    env = SimEnv(num_clients=args.num_clients, workspace_root=args.workspace)
    job = run_job(lambda: build_recipe(args), env, args.workspace, args.num_clients, "fedbip-dropin")
    if job.results is None:  # the flags cannot work, or the server aborted
        return job.finish()
    results, run_dir = job.results, job.run_dir
    path = write_results(results, run_dir)
    print(f"\nFedAvgRecipe + FedBip drop-in on {args.suite}: {args.num_clients} clients, {args.num_rounds} rounds\n")
    print(format_table(results))
    print(f"\nresults: {path}\nper-client adapters on the server: {run_dir}/server/simulate_job/fedbip/state")
    return job.finish()


if __name__ == "__main__":
    sys.exit(main())
