"""Local LoRA fine-tuning of a causal LM on a site's instruction data (the "causal-lm" modality's trainer)."""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fedbip_nvflare.client.trainer_base import SiteTrainer
from fedbip_nvflare.data.instruct import (
    IGNORE_INDEX,
    PROMPT_TEMPLATE,
    PROMPT_TEMPLATE_NO_INPUT,
    InstructTaskData,
    encode_example,
    encode_prompt,
)
from fedbip_nvflare.models.batching import pad_sequences
from fedbip_nvflare.models.causal_lm import build_causal_lm, generate_greedy
from fedbip_nvflare.models.lora import LoraSettings

GENERATION_FILE = "generation.json"


def normalize_answer(text: str) -> str:
    """The answer as exact match compares it: the first non-empty line, stripped and lower-cased."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].lower() if lines else ""


# ROUGE variants scored (rouge-score's names) and the keys they are reported under.
ROUGE_KEYS = {"rougeL": "rouge_l", "rouge1": "rouge1", "rouge2": "rouge2", "rougeLsum": "rouge_lsum"}


def _sentences_on_lines(text: str) -> str:
    # As the T5 metrics prepare texts for rougeLsum: one sentence per line.
    return text.replace(" . ", " .\n")


def score_responses(responses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """Mean exact match (of :func:`normalize_answer`) and ROUGE F1 scores (Google's ``rouge-score``) of responses.

    ROUGE is scored as the T5 metrics (and the FedBip paper's group) score it: no stemming, and for ``rougeLsum``
    sentences split at ``" . "``; each score is the F1 of one (reference, response) pair, averaged over pairs.

    Args:
        responses: Generated responses.
        references: The expected outputs, one per response.

    Returns:
        ``{"exact_match", "rouge_l", "rouge1", "rouge2", "rouge_lsum"}``, all in [0, 1]; 0 for no responses.

    Raises:
        ValueError: ``responses`` and ``references`` differ in length.
    """
    from rouge_score import rouge_scorer

    if len(responses) != len(references):
        raise ValueError(f"{len(responses)} responses for {len(references)} references")
    if not responses:
        return {"exact_match": 0.0, **{key: 0.0 for key in ROUGE_KEYS.values()}}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)
    pairs = list(zip(responses, references))
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for response, reference in pairs:
        scores = scorer.score(_sentences_on_lines(reference), _sentences_on_lines(response))
        for name in ROUGE_KEYS:
            totals[name] += scores[name].fmeasure
    exact = sum(normalize_answer(r) == normalize_answer(ref) for r, ref in pairs)
    return {"exact_match": exact / len(pairs), **{key: totals[name] / len(pairs) for name, key in ROUGE_KEYS.items()}}


class CausalLMSiteTrainer(SiteTrainer):
    """Instruction tuning of a causal LM with LoRA; no head, so every LoRA tensor travels.

    Training minimises the mean cross-entropy over the response tokens (prompt and padding masked out, see
    :func:`fedbip_nvflare.data.instruct.encode_example`). Evaluation generates greedily (``settings.max_new_tokens``,
    batches of ``settings.eval_batch_size`` left-padded prompts) and scores exact match of the normalised first
    line (:func:`normalize_answer`) as the primary metric; ROUGE-L F1 (Google's ``rouge-score``) of the whole
    response is in :meth:`extra_metrics`. With ``precision="bf16"`` the frozen base weights are kept in bfloat16
    too (half the memory); the LoRA tensors and optimizer state stay fp32.

    Args:
        model_name_or_path: HF model id, folder or GGUF file (see :func:`fedbip_nvflare.models.causal_lm.
            locate_causal_lm`).
        data: The site's instruction task data.
        lora: LoRA settings (identical on every site).
        settings: Local training settings (``max_length``: prompt + response tokens).
        device: torch device (default: CUDA if available, else CPU).
    """

    data: InstructTaskData

    def _build(self, model_name_or_path: str, lora: LoraSettings) -> nn.Module:
        model, self.tokenizer, self.source = build_causal_lm(
            model_name_or_path,
            lora,
            seed=self.settings.seed,
            gradient_checkpointing=self.settings.gradient_checkpointing,
            dtype=torch.bfloat16 if self.settings.precision == "bf16" else torch.float32,
        )
        return model

    def _prepare_data(self) -> None:
        length = self.settings.max_length
        self._train: List[Tuple[List[int], List[int]]] = [
            encode_example(e, self.tokenizer, length) for e in self.data.train.examples
        ]
        self._test: List[List[int]] = [encode_prompt(e, self.tokenizer, length) for e in self.data.test.examples]
        self._references: List[str] = [e.output for e in self.data.test.examples]
        self._metrics: Dict[str, float] = {}
        self.predictions: Dict[int, str] = {}

    def _train_batch(self, indices: List[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, attention_mask, labels)`` of training examples."""
        input_ids, mask = pad_sequences([self._train[i][0] for i in indices], self.tokenizer.pad_token_id)
        labels, _ = pad_sequences([self._train[i][1] for i in indices], IGNORE_INDEX)
        return input_ids, mask, labels

    def _batch_loss(self, indices: List[int]) -> torch.Tensor:
        input_ids, mask, labels = self._train_batch(indices)
        # Position t predicts token t + 1: logits only at positions whose next token is supervised in some row.
        positions = torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(dim=0)).flatten()
        logits = self.model(input_ids.to(self.device), mask.to(self.device), positions.to(self.device))
        targets = labels[:, positions + 1].to(self.device)
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
        )

    def generate(self, indices: List[int]) -> List[str]:
        """Greedy responses to the test prompts ``indices`` (at most ``settings.max_new_tokens`` tokens each)."""
        with self.autocast():
            return generate_greedy(
                self.model.backbone,
                self.tokenizer,
                [self._test[i] for i in indices],
                self.settings.max_new_tokens,
                self.settings.eval_batch_size,
                self.device,
            )

    def evaluate(self, indices: Optional[List[int]] = None) -> float:
        """Exact match in [0, 1] of greedy responses on the site's test split (or the test examples ``indices``).

        The responses are kept in :attr:`predictions` (``{test index: response}``), ROUGE-L F1 in
        :meth:`extra_metrics`.
        """
        chosen = list(range(self.n_test)) if indices is None else list(indices)
        self.predictions = dict(zip(chosen, self.generate(chosen)))
        self._metrics = score_responses([self.predictions[i] for i in chosen], [self._references[i] for i in chosen])
        return self._metrics["exact_match"]

    def extra_metrics(self) -> Dict[str, float]:
        """ROUGE F1 means (``rouge_l``, ``rouge1``, ``rouge2``, ``rouge_lsum``) of the last :meth:`evaluate`'s
        responses against the references (see :func:`score_responses`)."""
        return {k: v for k, v in self._metrics.items() if k != "exact_match"}

    def _personalized_files(self, directory: str) -> None:
        """``generation.json``: base model (and GGUF file), prompt template, task, generation settings, and the
        metrics of the last evaluation (the personalized model's, when the final validation saves it)."""
        with open(os.path.join(directory, GENERATION_FILE), "w") as f:
            json.dump(
                {
                    "task": self.data.task,
                    "base_model": self.model_name_or_path,
                    "model_path": self.source.path,
                    "gguf_file": self.source.gguf_file,
                    "prompt_template": PROMPT_TEMPLATE,
                    "prompt_template_no_input": PROMPT_TEMPLATE_NO_INPUT,
                    "answers": list(self.data.label_names),
                    "max_length": self.settings.max_length,
                    "max_new_tokens": self.settings.max_new_tokens,
                    "last_evaluation": {"n_examples": len(self.predictions), **self._metrics},
                },
                f,
                indent=2,
            )
