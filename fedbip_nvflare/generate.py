"""Answers from a site's personalized causal LM saved by :meth:`CausalLMSiteTrainer.save_personalized`.

A personalized causal-LM folder holds a peft LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``)
and ``generation.json`` (base model, prompt template, generation settings). :func:`load_personalized_lm` loads it
on top of the pre-trained base model; :func:`generate_file` answers the instructions of a file with the prompts
used in training, and scores the answers where the file has reference outputs.
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from fedbip_nvflare.client.causal_lm import GENERATION_FILE, score_responses
from fedbip_nvflare.data.instruct import encode_prompt, read_instruct_file
from fedbip_nvflare.models.causal_lm import generate_greedy, load_pretrained_causal_lm, locate_causal_lm
from fedbip_nvflare.predict import ADAPTER_CONFIG_FILE, check_positive

RESPONSE_FIELDS = ("instruction", "input", "response")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def read_generation_info(adapter_dir: str) -> Dict[str, Any]:
    """``generation.json`` of a personalized causal-LM folder.

    Raises:
        FileNotFoundError: The folder, its ``generation.json`` or its adapter is missing.
        ValueError: ``generation.json`` is not a JSON object.
    """
    for name in (GENERATION_FILE, ADAPTER_CONFIG_FILE):
        if not os.path.isfile(os.path.join(adapter_dir, name)):
            raise FileNotFoundError(
                f"{adapter_dir} has no {name}: a personalized causal-LM folder needs {ADAPTER_CONFIG_FILE} (with the "
                f"adapter weights) and {GENERATION_FILE}, as written by CausalLMSiteTrainer.save_personalized"
            )
    path = os.path.join(adapter_dir, GENERATION_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object with 'base_model', got {info!r:.80}")
    return info


def load_personalized_lm(
    adapter_dir: str, model: Optional[str] = None, device: Optional[str] = None, precision: str = "fp32"
) -> Tuple[Any, Any, Dict[str, Any]]:
    """Loads a personalized causal-LM folder: the base model with the site's LoRA adapter.

    The base model is ``base_model`` of ``generation.json`` (or ``model``), located like in training (hub id, HF
    folder or GGUF file; known ids resolve to their offline copies); the adapter is loaded with
    ``PeftModel.from_pretrained``.

    Args:
        adapter_dir: Folder with ``adapter_config.json``, ``adapter_model.safetensors`` and ``generation.json``.
        model: Base model id, folder or GGUF file; overrides ``base_model`` of ``generation.json`` (e.g. when the
            model folder used in training has moved). It must be the model the adapter was trained on.
        device: torch device (default: CUDA if available, else CPU).
        precision: ``"fp32"`` or ``"bf16"`` (weights in bfloat16: half the memory, for GPUs).

    Returns:
        ``(model, tokenizer, info)``: a ``peft.PeftModel`` in eval mode, the base model's tokenizer (with a pad
        token) and the folder's ``generation.json``.

    Raises:
        FileNotFoundError: The folder or one of its required files is missing.
        ValueError: ``generation.json`` is malformed or names no base model (and ``model`` is None), an unknown
            ``precision``, or the adapter does not fit the base model.
    """
    from peft import PeftModel

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if not os.path.isdir(adapter_dir):
        raise FileNotFoundError(
            f"personalized model folder not found: {adapter_dir}; pass the folder a site saved its personalized "
            "model to (its personalized_adapter folder)"
        )
    info = read_generation_info(adapter_dir)
    base = model if model is not None else info.get("base_model")
    if not isinstance(base, str) or not base.strip():
        raise ValueError(
            f"{os.path.join(adapter_dir, GENERATION_FILE)} names no 'base_model': pass the base model the adapter "
            "was trained on (model=... / --model)"
        )
    lm, tokenizer = load_pretrained_causal_lm(locate_causal_lm(base), PRECISIONS[precision])
    try:
        peft_model = PeftModel.from_pretrained(lm, adapter_dir, is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ValueError(
            f"cannot load the adapter in {adapter_dir} onto base model {base!r}: {e}; pass the base model the "
            "adapter was trained on (model=... / --model)"
        ) from e
    peft_model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    peft_model.eval()
    return peft_model, tokenizer, info


def generate_file(
    adapter_dir: str,
    input_path: str,
    model: Optional[str] = None,
    max_length: Optional[int] = None,
    max_new_tokens: Optional[int] = None,
    batch_size: int = 8,
    device: Optional[str] = None,
    precision: str = "fp32",
) -> Tuple[List[Dict[str, str]], Optional[Dict[str, float]]]:
    """Answers the instructions of a file with a personalized causal LM (greedy decoding).

    Args:
        adapter_dir: Personalized causal-LM folder (see :func:`load_personalized_lm`).
        input_path: JSON lines (or a ``.json`` array) of ``{"instruction", "input" (optional), "output"
            (optional)}`` objects, like the site data.
        model: Base model overriding ``base_model`` of ``generation.json``.
        max_length: Most prompt tokens (inputs are shortened to fit); default: the training ``max_length``.
        max_new_tokens: Most tokens per answer; default: the training setting.
        batch_size: Prompts per ``generate`` call.
        device: torch device (default: CUDA if available, else CPU).
        precision: ``"fp32"`` or ``"bf16"``.

    Returns:
        ``(rows, scores)``: one ``{"instruction", "input", "response"}`` per record in file order (plus ``"output"``
        where the file has one), and, when every record has an ``output``, ``{"exact_match", "rouge_l"}`` of the
        responses against them (the metrics of the site's evaluation), else None.

    Raises:
        FileNotFoundError: The input file, the folder or one of its required files is missing.
        ValueError: A malformed input file or folder, or a bad length / batch size.
    """
    check_positive("batch_size", batch_size)
    examples = read_instruct_file(input_path, require_output=False)  # input errors surface before the model loads
    peft_model, tokenizer, info = load_personalized_lm(adapter_dir, model=model, device=device, precision=precision)
    max_length = int(max_length or info.get("max_length") or 512)
    max_new_tokens = int(max_new_tokens or info.get("max_new_tokens") or 64)
    check_positive("max_length", max_length)
    check_positive("max_new_tokens", max_new_tokens)
    prompts = [encode_prompt(e, tokenizer, max_length) for e in examples]
    device_ = next(peft_model.parameters()).device
    responses = generate_greedy(peft_model, tokenizer, prompts, max_new_tokens, batch_size, device_)
    rows = []
    for example, response in zip(examples, responses):
        row = {"instruction": example.instruction, "input": example.input, "response": response}
        if example.output:
            row["output"] = example.output
        rows.append(row)
    scored = all(e.output for e in examples)
    scores = score_responses(responses, [e.output for e in examples]) if scored else None
    return rows, scores


def response_fields(rows: Sequence[Dict[str, Any]]) -> Tuple[str, ...]:
    """The fields to write for ``rows``: instruction, input, response, and output when every row has one."""
    return RESPONSE_FIELDS + (("output",) if rows and all("output" in r for r in rows) else ())


def format_responses(rows: Sequence[Dict[str, Any]], scores: Optional[Dict[str, float]], max_text: int = 60) -> str:
    """A plain-text listing for printing: per row the response and the start of its instruction and input.

    Line breaks are shown as spaces; texts longer than ``max_text`` characters are cut with ``...``. With
    ``scores``, a last line gives exact match and ROUGE-L.
    """
    max_text = max(4, int(max_text))

    def cut(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= max_text else text[: max_text - 3] + "..."

    lines = []
    for i, row in enumerate(rows, start=1):
        lines.append(f"[{i}] {cut(row['instruction'])}" + (f" | {cut(row['input'])}" if row["input"] else ""))
        lines.append(
            f"    -> {cut(row['response'])}" + (f"   (expected: {cut(row['output'])})" if "output" in row else "")
        )
    if scores is not None:
        lines.append(
            f"exact match {scores['exact_match']:.3f}, ROUGE-L {scores['rouge_l']:.3f} over {len(rows)} examples"
        )
    return "\n".join(lines)
