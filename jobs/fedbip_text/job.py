"""Main FedBip job: 8 real text tasks, all-MiniLM-L6-v2 + LoRA, NVFlare simulator.

python jobs/fedbip_text/job.py                          # run in SimEnv, print the per-client table
python jobs/fedbip_text/job.py --compare local fedavg   # also each site alone and FedAvg, same data and budget
python jobs/fedbip_text/job.py --export --export-dir D  # export the folder `nvflare simulator` takes
"""

import argparse
import functools
import os
import sys

from nvflare.recipe.sim_env import SimEnv

from fedbip_nvflare.core import NEGATIVE_POLICIES
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.results import format_comparison, format_table, run_job, write_results


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-clients", type=int, default=8)
    p.add_argument("--num-rounds", type=int, default=3)
    p.add_argument("--max-examples", type=int, default=300, help="training examples per client")
    p.add_argument("--test-examples", type=int, default=200, help="test examples per client")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workspace", default="/tmp/nvflare/fedbip", help="simulator workspace root")
    p.add_argument("--output", default=None, help="folder for results.json (default: the job's workspace)")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="HF model id or local folder")
    p.add_argument("--suite", default="text-tasks")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--layerwise", action="store_true", help="FedBip-L")
    p.add_argument("--negative", default="clip", choices=list(NEGATIVE_POLICIES))
    p.add_argument("--similarity-on", default="round", choices=["round", "cumulative"])
    p.add_argument("--client-mode", default="executor", choices=["executor", "client_api"])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="clients the simulator runs in parallel (default: all, so each site keeps one process and its model "
        "for the whole run; fewer threads make NVFlare 2.9's simulator start a process per task)",
    )
    p.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads per client")
    p.add_argument(
        "--compare",
        nargs="*",
        default=[],
        choices=list(COMPARISONS),
        help="after FedBip, run these methods on the same sites, data, seed and budget and print every site's "
        "accuracy side by side: local (each site trained alone), fedavg (one averaged model)",
    )
    return p.parse_args()


COMPARISONS = ("local", "fedavg")


def build_recipe(args, aggregation: str = "fedbip") -> FedBipRecipe:
    """FedBipRecipe on the text suite's sites (suites that split one pool over all sites get the client count).

    ``aggregation`` other than "fedbip" builds that comparison method (named ``fedbip_text_<method>``) with the same
    data, seed and budget and without FedBip's own options.
    """
    fedbip = aggregation == "fedbip"
    rule = dict(layerwise=args.layerwise, negative=args.negative, similarity_on=args.similarity_on) if fedbip else {}
    name = ("fedbip_text_l" if args.layerwise else "fedbip_text") if fedbip else f"fedbip_text_{aggregation}"
    return FedBipRecipe(
        name=name,
        aggregation=aggregation,
        **rule,
        model=args.model,
        num_rounds=args.num_rounds,
        min_clients=args.num_clients,
        data={
            "suite": args.suite,
            "n_train": args.max_examples,
            "n_test": args.test_examples,
            "seed": args.seed,
            "num_clients": args.num_clients,
        },
        local_epochs=args.local_epochs,
        max_length=args.max_length,
        num_threads=args.torch_threads,
        seed=args.seed,
        client_mode=args.client_mode,
    )


def main():
    args = parse_args()
    env = SimEnv(num_clients=args.num_clients, num_threads=args.threads, workspace_root=args.workspace)
    method = "fedbip-l" if args.layerwise else "fedbip"
    job = run_job(lambda: build_recipe(args), env, args.workspace, args.num_clients, method)
    if job.results is None:  # the flags cannot work, or the server aborted
        return job.finish()
    results, run_dir = job.results, job.run_dir
    path = write_results(results, args.output or run_dir)
    print(
        f"\nFedBip{'-L' if args.layerwise else ''} on {args.suite}: {args.num_clients} clients, "
        f"{args.num_rounds} rounds\n"
    )
    print(format_table(results))
    print(f"\nresults: {path}\nworkspace: {run_dir}")
    if args.compare:
        runs = {method: results}
        for other in args.compare:
            build = functools.partial(build_recipe, args, other)
            compared = run_job(build, env, args.workspace, args.num_clients, other)
            if compared.results is None:
                return compared.finish()
            runs[other] = compared.results
            write_results(compared.results, os.path.join(args.output or run_dir, other))
        reference = "local" if "local" in runs else method
        print(
            f"\nFinal accuracy (%) of each site's model: {method} against the same sites trained with "
            f"{', '.join(args.compare)} (same data, seed and budget; Δ in points against {reference})\n"
        )
        print(format_comparison(runs, reference))
    print(
        "load an adapter: PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter_dir); "
        "the private head is adapter_dir/head.safetensors"
    )
    return job.finish()


if __name__ == "__main__":
    sys.exit(main())
