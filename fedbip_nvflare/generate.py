"""Answers from a site's personalized causal LM saved by :meth:`CausalLMSiteTrainer.save_personalized`.

A personalized causal-LM folder holds a peft LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``)
and ``generation.json`` (base model, prompt template, generation settings). :func:`load_personalized_lm` loads it
on top of the pre-trained base model; :func:`generate_file` answers the instructions of a file with the prompts
used in training, and scores the answers where the file has reference outputs.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from fedbip_nvflare.client.causal_lm import GENERATION_FILE, score_responses
from fedbip_nvflare.data.instruct import encode_prompt, read_instruct_file
from fedbip_nvflare.models.causal_lm import generate_greedy, load_pretrained_causal_lm, locate_causal_lm
from fedbip_nvflare.predict import attach_adapter, base_model_of, check_positive, read_folder_info

RESPONSE_FIELDS = ("instruction", "input", "response")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    info = read_folder_info(adapter_dir, GENERATION_FILE, [], "CausalLMSiteTrainer.save_personalized")
    base = base_model_of(adapter_dir, GENERATION_FILE, info, model)
    lm, tokenizer = load_pretrained_causal_lm(locate_causal_lm(base), PRECISIONS[precision])
    peft_model = attach_adapter(lm, adapter_dir, base)
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
        where the file has one), and, when every record has an ``output``, the scores of
        :func:`fedbip_nvflare.client.causal_lm.score_responses` (exact match and ROUGE) of the responses against
        them (the metrics of the site's evaluation), else None.

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
