"""Causal language model with LoRA: an HF ``AutoModelForCausalLM`` (from a folder, a hub id or a GGUF file).

A GGUF file (a folder holding exactly one ``*.gguf``, or the path of the file) is dequantized to fp32 by
transformers on load, which needs the ``gguf`` package. The offline default ``HuggingFaceTB/SmolLM2-135M-Instruct``
resolves to the Q4_1 GGUF copy that ``python -m fedbip_nvflare.assets fetch`` puts in the asset cache.

Dequantizing and parsing a GGUF file takes tens of seconds on a CPU, and every site (and the server, for the
configuration) would do it in every job, so the first load saves the dequantized model and tokenizer as an ordinary
HF folder under ``<asset cache>/dequantized/`` (:func:`dequantized_folder`, keyed by the file's path, size and
modification time) and later loads read that folder (same weights, same tokenizer).
"""

import glob
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fedbip_nvflare import assets
from fedbip_nvflare.models.batching import pad_sequences
from fedbip_nvflare.models.lora import LoraSettings, with_lora
from fedbip_nvflare.models.resolve import resolve_model_path

logger = logging.getLogger(__name__)

DEFAULT_CAUSAL_LM_TARGETS: Tuple[str, ...] = ("q_proj", "v_proj")
DEFAULT_CAUSAL_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class CausalLMSource:
    """Where a causal LM's files are.

    Attributes:
        path: Local folder or hub id (what ``from_pretrained`` gets).
        gguf_file: Name of the GGUF file inside ``path`` (None: an ordinary HF model folder / id).
    """

    path: str
    gguf_file: Optional[str] = None

    def kwargs(self) -> Dict[str, str]:
        """Keyword arguments of ``from_pretrained`` for this source (``gguf_file`` where needed)."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def locate_causal_lm(model_name_or_path: str) -> CausalLMSource:
    """Where to load a causal LM from.

    Args:
        model_name_or_path: HF model id (known ids resolve to offline copies), an HF model folder, a folder holding
            exactly one ``*.gguf`` file (and no ``config.json``), or the path of a ``.gguf`` file.

    Returns:
        The folder or id, and the GGUF file's name when the model is a GGUF file.

    Raises:
        FileNotFoundError: A ``.gguf`` path or local folder that does not exist.
        ValueError: A folder with several GGUF files and no ``config.json`` (pass the file's path instead).
    """
    if isinstance(model_name_or_path, str) and model_name_or_path.lower().endswith(GGUF_SUFFIX):
        if not os.path.isfile(model_name_or_path):
            raise FileNotFoundError(f"GGUF file {model_name_or_path!r} does not exist")
        path = os.path.abspath(model_name_or_path)
        return CausalLMSource(os.path.dirname(path), os.path.basename(path))
    path = resolve_model_path(model_name_or_path)
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "config.json")):
        return CausalLMSource(path)
    ggufs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(path, "*" + GGUF_SUFFIX)))
    if len(ggufs) > 1:
        raise ValueError(
            f"model folder {path!r} holds several GGUF files {ggufs}; pass the path of the one to use as the model"
        )
    return CausalLMSource(path, ggufs[0] if ggufs else None)


def dequantized_folder(source: CausalLMSource) -> str:
    """Where the dequantized HF copy of a GGUF model is kept (whether or not it exists yet).

    Raises:
        ValueError: ``source`` is not a GGUF file.
    """
    if not source.gguf_file:
        raise ValueError(f"{source.path!r} is not a GGUF model")
    path = os.path.abspath(os.path.join(source.path, source.gguf_file))
    stat = os.stat(path)
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return os.path.join(assets.assets_dir(), "dequantized", f"{os.path.splitext(source.gguf_file)[0]}-{key}")


def _has_copy(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and os.path.isfile(
        os.path.join(folder, "tokenizer_config.json")
    )


def _save_dequantized(source: CausalLMSource, folder: str) -> None:
    """Dequantizes the GGUF model once and saves model and tokenizer to ``folder`` (atomically: a temporary folder
    renamed into place, so concurrent sites never read a partial copy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s once into %s", os.path.join(source.path, source.gguf_file), folder)
    model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, **source.kwargs())
    tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs())
    # The weights are plain fp32 tensors now; only the GGUF markers stop save_pretrained.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(folder))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _has_copy(folder):  # another process's copy got there first; otherwise a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def loadable_source(source: CausalLMSource, convert: bool = True) -> CausalLMSource:
    """The folder to load a model from: a GGUF model's dequantized copy (made first if ``convert``), else ``source``.

    A copy that cannot be written (read-only cache) is skipped with a warning: the GGUF file is then loaded directly.
    """
    if not source.gguf_file:
        return source
    folder = dequantized_folder(source)
    if not _has_copy(folder) and convert:
        try:
            _save_dequantized(source, folder)
        except OSError as e:
            logger.warning("could not save a dequantized copy of %s (%s); loading the GGUF file", source.gguf_file, e)
    return CausalLMSource(folder) if _has_copy(folder) else source


def load_causal_lm_tokenizer(source: CausalLMSource):
    """The model's tokenizer, with a pad token (the EOS token when the model defines none).

    Raises:
        ValueError: The tokenizer has neither a pad nor an EOS token.
    """
    from transformers import AutoTokenizer

    source = loadable_source(source)
    tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs())
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {source.path!r} has no EOS token; a causal LM needs one to end its responses")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out everywhere, so any id will do
    return tokenizer


class CausalLM(nn.Module):
    """A causal LM wrapped by peft, in the shape every site trainer expects: ``backbone``, no ``head``.

    Args:
        backbone: A ``peft.PeftModel`` around an HF ``AutoModelForCausalLM``.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Next-token logits ``[batch, length, vocab]``, or ``[batch, len(positions), vocab]`` at ``positions`` only.

        Computing the vocabulary projection only where a loss is taken (HF's ``logits_to_keep``) saves most of its
        cost when responses are short.
        """
        extra = {} if positions is None else {"logits_to_keep": positions}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).logits

    def head_state(self) -> Dict[str, torch.Tensor]:
        """No head: ``{}``."""
        return {}

    def load_head_state(self, state: Dict[str, torch.Tensor]) -> None:
        """No head: accepts only an empty state.

        Raises:
            ValueError: ``state`` holds tensors.
        """
        if state:
            raise ValueError(f"a causal LM has no classification head, got head tensors {sorted(state)[:3]}")


def load_pretrained_causal_lm(source: CausalLMSource, dtype: torch.dtype = torch.float32) -> Tuple[nn.Module, "object"]:
    """The pre-trained ``AutoModelForCausalLM`` (from the dequantized copy of a GGUF model) and its tokenizer.

    Args:
        source: Where the model is (:func:`locate_causal_lm`).
        dtype: dtype of the weights.

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token, which the model's generation config uses.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # NVFlare interleaves many processes' logs: no progress bars
    tokenizer = load_causal_lm_tokenizer(source)
    files = loadable_source(source)
    model = AutoModelForCausalLM.from_pretrained(files.path, dtype=dtype, **files.kwargs())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_causal_lm(
    model_name_or_path: str,
    lora: LoraSettings,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tuple[CausalLM, "object", CausalLMSource]:
    """Loads the pre-trained causal LM and its tokenizer and adds LoRA.

    Args:
        model_name_or_path: See :func:`locate_causal_lm`.
        lora: LoRA settings (``target_modules`` must name modules of the model, e.g. ``q_proj``, ``v_proj``).
        seed: Seed of LoRA's initialisation (the federated θ̄⁰ replaces it before training).
        gradient_checkpointing: Make the embeddings' outputs require grad, which HF's gradient checkpointing needs
            when only adapters train (the trainer then calls ``gradient_checkpointing_enable``).
        dtype: dtype of the frozen base weights (peft keeps the LoRA tensors in fp32 either way).

    Returns:
        ``(model, tokenizer, source)``; only LoRA parameters require grad.

    Raises:
        ValueError: LoRA targets match no module of the model.
    """
    source = locate_causal_lm(model_name_or_path)
    base, tokenizer = load_pretrained_causal_lm(source, dtype)
    torch.manual_seed(seed)
    if gradient_checkpointing:
        base.enable_input_require_grads()
    peft_model = with_lora(base, lora, model_name_or_path)
    return CausalLM(peft_model), tokenizer, source


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
) -> List[str]:
    """Greedy responses of a causal LM to tokenised prompts, decoded without special tokens.

    Prompts of similar length share a batch (less padding); each batch is left-padded, so generation continues
    every row from its own last token. The model is put in eval mode.

    Args:
        model: An HF causal LM (e.g. a ``peft.PeftModel`` around one) with ``generate``.
        tokenizer: Its tokenizer (with a pad and an EOS token, see :func:`load_causal_lm_tokenizer`).
        prompts: Token ids of each prompt (e.g. from :func:`fedbip_nvflare.data.instruct.encode_prompt`).
        max_new_tokens: Most tokens generated per prompt (generation also stops at EOS).
        batch_size: Prompts per ``generate`` call.
        device: Where the model is.

    Returns:
        One response per prompt, in the order of ``prompts``.
    """
    from transformers import GenerationConfig

    model.eval()
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    responses: List[str] = [""] * len(prompts)
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        input_ids, mask = pad_sequences([prompts[i] for i in batch], tokenizer.pad_token_id, left=True)
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=config)
        for i, text in zip(batch, tokenizer.batch_decode(out[:, input_ids.shape[1] :].cpu(), skip_special_tokens=True)):
            responses[i] = text
    return responses


def causal_lm_backbone(model_path: str) -> Tuple[nn.Module, int]:
    """The bare causal LM LoRA wraps, built from its configuration alone (GGUF metadata too), and 0 (no head).

    Call it under ``torch.device("meta")`` to get names and shapes without allocating weights.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    source = loadable_source(locate_causal_lm(model_path), convert=False)
    config = AutoConfig.from_pretrained(source.path, **source.kwargs())
    return AutoModelForCausalLM.from_config(config), 0
