"""Local LoRA fine-tuning of an image classifier on one site's images (the ``vision`` modality)."""

from typing import List, Optional, Tuple

import torch
from torch import nn

from fedbip_nvflare.client.trainer_base import SiteTrainer
from fedbip_nvflare.data.images import ImageSplit, ImageTaskData
from fedbip_nvflare.models.lora import LoraSettings
from fedbip_nvflare.models.pixels import normalize
from fedbip_nvflare.models.vision import build_image_classifier, image_input_dict


class ImageSiteTrainer(SiteTrainer):
    """Image classification: a pre-trained backbone with LoRA, pooled features and a client-private head.

    Images stay uint8 in memory and are normalised (with the backbone's mean/std, and resized to the side a
    fixed-size HF model needs) batch by batch.

    Args:
        model_name_or_path: ``"torchvision/mobilenet_v2"``, a MobileNetV2 checkpoint, or an HF image model.
        data: The site's image task data.
        lora: LoRA settings (identical on every site).
        settings: Local training settings (``max_length`` is unused).
        device: torch device (default: CUDA if available, else CPU).
    """

    data: ImageTaskData

    def _build(self, model_name_or_path: str, lora: LoraSettings) -> nn.Module:
        model, self.image_input = build_image_classifier(
            model_name_or_path, self.data.num_labels, lora, seed=self.settings.seed
        )
        return model

    def _prepare_data(self) -> None:
        self._train, self._test = self.data.train, self.data.test
        self._side = self.image_input.image_size or self.data.image_size

    def _batch(self, split: ImageSplit, indices: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = normalize(split.images[indices], self.image_input.mean, self.image_input.std)
        if x.shape[-1] != self._side:
            x = nn.functional.interpolate(x, size=(self._side, self._side), mode="bilinear", antialias=True)
        return x.to(self.device), torch.from_numpy(split.labels[indices]).to(self.device)

    def _batch_loss(self, indices: List[int]) -> torch.Tensor:
        x, y = self._batch(self._train, indices)
        return nn.functional.cross_entropy(self.model(x), y)

    @torch.no_grad()
    def evaluate(self, indices: Optional[List[int]] = None) -> float:
        """Accuracy in [0, 1] on the site's test images, or on the test images ``indices``."""
        self.model.eval()
        chosen = list(range(self.n_test)) if indices is None else list(indices)
        correct = 0
        for b in range(0, len(chosen), self.settings.eval_batch_size):
            x, y = self._batch(self._test, chosen[b : b + self.settings.eval_batch_size])
            with self.autocast():
                logits = self.model(x)
            correct += int((logits.argmax(dim=-1) == y).sum())
        return correct / max(1, len(chosen))

    def _personalized_files(self, directory: str) -> None:
        """``labels.json``: task, label names, base model, modality and the input preprocessing (size, mean, std)."""
        self._write_labels(directory, modality="vision", **image_input_dict(self.image_input, self._side))
