"""FedBip on images: the vision-domains suite (Fashion-MNIST, MNIST, 8x8 digits), MobileNetV2 + LoRA, NVFlare simulator.

python jobs/fedbip_vision/job.py                          # run in SimEnv, print the per-client table
python jobs/fedbip_vision/job.py --export --export-dir D  # export the folder `nvflare simulator` takes
"""

import argparse
import sys

from nvflare.recipe.sim_env import SimEnv  # NVFlare consumes --export / --export-dir when this is imported

from fedbip_nvflare.core import NEGATIVE_POLICIES
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.results import format_table, run_job, write_results

MODEL = "torchvision/mobilenet_v2"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-clients", type=int, default=6)
    p.add_argument("--num-rounds", type=int, default=3)
    p.add_argument("--max-examples", type=int, default=200, help="training images per client")
    p.add_argument("--test-examples", type=int, default=200, help="test images per client")
    p.add_argument("--image-size", type=int, default=32, help="side of the square images the model sees")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workspace", default="/tmp/nvflare/fedbip_vision", help="simulator workspace root")
    p.add_argument("--output", default=None, help="folder for results.json (default: the job's workspace)")
    p.add_argument("--model", default=MODEL, help="torchvision/mobilenet_v2, a MobileNetV2 .pth, or an HF image model")
    p.add_argument("--suite", default="vision-domains")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="LoRA learning rate")
    p.add_argument("--layerwise", action="store_true", help="FedBip-L")
    p.add_argument("--negative", default="clip", choices=list(NEGATIVE_POLICIES))
    p.add_argument("--similarity-on", default="round", choices=["round", "cumulative"])
    p.add_argument("--client-mode", default="executor", choices=["executor", "client_api"])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="clients the simulator runs in parallel (default: all, so each site keeps one process and its model)",
    )
    p.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads per client")
    return p.parse_args()


def build_recipe(args) -> FedBipRecipe:
    """FedBipRecipe with the vision modality on the sites' suite data."""
    return FedBipRecipe(
        name="fedbip_vision_l" if args.layerwise else "fedbip_vision",
        modality="vision",
        model=args.model,
        num_rounds=args.num_rounds,
        min_clients=args.num_clients,
        data={
            "suite": args.suite,
            "n_train": args.max_examples,
            "n_test": args.test_examples,
            "seed": args.seed,
            "image_size": args.image_size,
        },
        layerwise=args.layerwise,
        negative=args.negative,
        similarity_on=args.similarity_on,
        local_epochs=args.local_epochs,
        learning_rate=args.learning_rate,
        num_threads=args.torch_threads,
        seed=args.seed,
        client_mode=args.client_mode,
    )


def main():
    args = parse_args()
    env = SimEnv(num_clients=args.num_clients, num_threads=args.threads, workspace_root=args.workspace)
    method = "fedbip-l" if args.layerwise else "fedbip"
    # with --export [--export-dir D], execute writes the job folder and exits
    job = run_job(lambda: build_recipe(args), env, args.workspace, args.num_clients, method)
    if job.results is None:  # the flags cannot work, or the server aborted
        return job.finish()
    results, run_dir = job.results, job.run_dir
    path = write_results(results, args.output or run_dir)
    print(
        f"\nFedBip{'-L' if args.layerwise else ''} on {args.suite} ({args.model}, {args.image_size}px): "
        f"{args.num_clients} clients, {args.num_rounds} rounds\n"
    )
    print(format_table(results))
    print(f"\nresults: {path}\nworkspace: {run_dir}")
    print(
        "load an adapter: PeftModel.from_pretrained(load_vision_backbone(base)[0], adapter_dir) with "
        "fedbip_nvflare.models.vision.load_vision_backbone; the private head is adapter_dir/head.safetensors and "
        "adapter_dir/labels.json holds the labels and the input size, mean and std"
    )
    return job.finish()


if __name__ == "__main__":
    sys.exit(main())
