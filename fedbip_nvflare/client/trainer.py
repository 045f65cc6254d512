"""Local LoRA fine-tuning of a text classifier on one site's texts (the ``text`` modality's trainer)."""

from typing import List, Optional

import torch
from torch import nn

from fedbip_nvflare.client.trainer_base import SiteTrainer
from fedbip_nvflare.data.text import TextSplit, TextTaskData
from fedbip_nvflare.models.batching import pad_sequences
from fedbip_nvflare.models.lora import LoraSettings
from fedbip_nvflare.models.text import build_text_classifier


class _Encoded:
    """A split tokenised once, batched with dynamic padding."""

    def __init__(self, split: TextSplit, tokenizer, max_length: int):
        enc = tokenizer(list(split.texts), truncation=True, max_length=max_length)
        self.ids: List[List[int]] = enc["input_ids"]
        self.labels = torch.tensor(split.labels, dtype=torch.long)
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: List[int]):
        input_ids, mask = pad_sequences([self.ids[i] for i in index], self.pad_id)
        return input_ids, mask, self.labels[index]


class TextSiteTrainer(SiteTrainer):
    """Text classification: a pre-trained HF encoder with LoRA, mean pooling and a client-private head.

    Args:
        model_name_or_path: HF model id or local folder.
        data: The site's text task data.
        lora: LoRA settings (identical on every site).
        settings: Local training settings.
        device: torch device (default: CUDA if available, else CPU).
    """

    data: TextTaskData

    def _build(self, model_name_or_path: str, lora: LoraSettings) -> nn.Module:
        model, self.tokenizer = build_text_classifier(
            model_name_or_path, len(self.data.label_names), lora, seed=self.settings.seed
        )
        return model

    def _prepare_data(self) -> None:
        self._train = _Encoded(self.data.train, self.tokenizer, self.settings.max_length)
        self._test = _Encoded(self.data.test, self.tokenizer, self.settings.max_length)

    def _batch_loss(self, indices: List[int]) -> torch.Tensor:
        input_ids, mask, labels = self._train.batch(indices)
        logits = self.model(input_ids.to(self.device), mask.to(self.device))
        return torch.nn.functional.cross_entropy(logits, labels.to(self.device))

    @torch.no_grad()
    def evaluate(self, indices: Optional[List[int]] = None) -> float:
        """Accuracy in [0, 1] on the site's test split, or on the test examples ``indices``."""
        self.model.eval()
        chosen = range(len(self._test)) if indices is None else indices
        order = sorted(chosen, key=lambda i: len(self._test.ids[i]))
        correct = 0
        for b in range(0, len(order), self.settings.eval_batch_size):
            input_ids, mask, labels = self._test.batch(order[b : b + self.settings.eval_batch_size])
            with self.autocast():
                logits = self.model(input_ids.to(self.device), mask.to(self.device))
            correct += int((logits.argmax(dim=-1).cpu() == labels).sum())
        return correct / max(1, len(order))

    def _personalized_files(self, directory: str) -> None:
        """``labels.json``: task, label names and base model (``AutoModel.from_pretrained(base)`` + the adapter)."""
        self._write_labels(directory)
