"""FedBip on a generative LLM: the instruct-tasks suite, SmolLM2-135M-Instruct + LoRA, NVFlare simulator.

Each client instruction-tunes the causal LM on its own task (site-k: task k of the instruct-tasks suite, real texts
phrased as instructions with short answers); every LoRA tensor travels, and each client gets back its own
personalized adapter. Clients score greedy generations on their test examples by exact match (the "accuracy"
column) and ROUGE-L.

python jobs/fedbip_llm/job.py                   # small CPU run in SimEnv, prints the per-client table
python jobs/fedbip_llm/job.py --export --export-dir jobs/fedbip_llm/job_folder
                                                # export the folder `nvflare simulator` takes (NVFlare's options)

A larger model on GPU sites: any HF causal LM id or folder (or a ``.gguf`` file) with ``q_proj``/``v_proj``
(Llama, Mistral, Qwen, SmolLM; other architectures: ``--target-modules``), bf16 autocast (the frozen base
weights are then held in bf16 too), gradient checkpointing, and the Client API script in a process of its own::

    python jobs/fedbip_llm/job.py --model meta-llama/Llama-3.2-1B-Instruct --precision bf16 \\
        --gradient-checkpointing --batch-size 4 --gradient-accumulation-steps 4 --max-length 512 \\
        --max-examples 2000 --test-examples 200 --max-input-words 300 --max-new-tokens 16 \\
        --num-rounds 5 --client-mode client_api --launch-external-process --torch-threads 0

Your own data instead of the suite: give each site ``{"train_path": "site.jsonl"}`` (records with
``instruction``, optional ``input`` and ``output``) through ``FedBipRecipe(per_site_config=...)``.
"""

import argparse
import json
import os
import sys

from fedbip_nvflare.client.causal_lm import GENERATION_FILE
from fedbip_nvflare.core import NEGATIVE_POLICIES
from fedbip_nvflare.models.causal_lm import DEFAULT_CAUSAL_LM, DEFAULT_CAUSAL_LM_TARGETS
from fedbip_nvflare.recipes import FedBipRecipe
from fedbip_nvflare.results import format_table, run_job, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-clients", type=int, default=4)
    p.add_argument("--num-rounds", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=32, help="training examples per client")
    p.add_argument("--test-examples", type=int, default=16, help="test examples per client")
    p.add_argument("--max-input-words", type=int, default=48, help="each suite text is cut to this many words")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workspace", default="/tmp/nvflare/fedbip_llm", help="simulator workspace root")
    p.add_argument("--output", default=None, help="folder for results.json (default: the job's workspace)")
    p.add_argument("--model", default=DEFAULT_CAUSAL_LM, help="HF causal LM id, local folder or .gguf file")
    p.add_argument("--suite", default="instruct-tasks")
    p.add_argument("--target-modules", nargs="+", default=list(DEFAULT_CAUSAL_LM_TARGETS))
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="LoRA learning rate")
    p.add_argument("--max-length", type=int, default=128, help="tokens of prompt + response")
    p.add_argument("--max-new-tokens", type=int, default=8, help="generation length of the evaluation")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--layerwise", action="store_true", help="FedBip-L")
    p.add_argument("--negative", default="clip", choices=list(NEGATIVE_POLICIES))
    p.add_argument("--similarity-on", default="round", choices=["round", "cumulative"])
    p.add_argument("--client-mode", default="executor", choices=["executor", "client_api"])
    p.add_argument("--launch-external-process", action="store_true", help="client_api: the script in its own process")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="clients the simulator runs in parallel (default: all, so each site keeps one process and its model)",
    )
    p.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads per client (0: torch's default)")
    return p.parse_args(argv)


def build_recipe(args) -> FedBipRecipe:
    """FedBipRecipe with the causal-lm modality on the sites' instruction data."""
    return FedBipRecipe(
        name="fedbip_llm_l" if args.layerwise else "fedbip_llm",
        modality="causal-lm",
        model=args.model,
        num_rounds=args.num_rounds,
        min_clients=args.num_clients,
        data={
            "suite": args.suite,
            "n_train": args.max_examples,
            "n_test": args.test_examples,
            "seed": args.seed,
            "max_input_words": args.max_input_words,
        },
        layerwise=args.layerwise,
        negative=args.negative,
        similarity_on=args.similarity_on,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        target_modules=args.target_modules,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        max_new_tokens=args.max_new_tokens,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        num_threads=args.torch_threads or None,
        seed=args.seed,
        client_mode=args.client_mode,
        launch_external_process=args.launch_external_process,
    )


def final_rouge(client: dict):
    """ROUGE-L F1 of a client's personalized model: from its results, else from its adapter's generation.json."""
    if client.get("rouge_l") is not None:
        return float(client["rouge_l"])
    path = os.path.join(client.get("adapter_dir") or "", GENERATION_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("last_evaluation", {}).get("rouge_l")


def format_rouge(results) -> str:
    """Per-client ROUGE-L of the final personalized models."""
    lines = [f"{'site':<10} {'task':<18} {'ROUGE-L':>8}"]
    for site, c in results["clients"].items():
        rouge = final_rouge(c)
        lines.append(f"{site:<10} {str(c.get('task')):<18} {'-' if rouge is None else f'{100 * rouge:8.2f}':>8}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    from nvflare.recipe.sim_env import SimEnv

    env = SimEnv(num_clients=args.num_clients, num_threads=args.threads, workspace_root=args.workspace)
    method = "fedbip-l" if args.layerwise else "fedbip"
    # with --export [--export-dir DIR], execute exports the job and exits
    job = run_job(lambda: build_recipe(args), env, args.workspace, args.num_clients, method)
    if job.results is None:  # the flags cannot work, or the server aborted
        return job.finish()
    results, run_dir = job.results, job.run_dir
    path = write_results(results, args.output or run_dir)
    print(f"\nFedBip{'-L' if args.layerwise else ''} on {args.suite} ({args.model}): ", end="")
    print(f"{args.num_clients} clients, {args.num_rounds} rounds; accuracy = exact match of greedy answers\n")
    print(format_table(results))
    print()
    print(format_rouge(results))
    print(f"\nresults: {path}\nworkspace: {run_dir}")
    print(
        "load an adapter: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base[, gguf_file=...]), "
        "adapter_dir); adapter_dir/generation.json holds the base model, GGUF file and prompt template"
    )
    return job.finish()


if __name__ == "__main__":
    sys.exit(main())
