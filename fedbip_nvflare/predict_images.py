"""Labels from a site's personalized image classifier saved by :meth:`ImageSiteTrainer.save_personalized`.

A personalized image-classifier folder holds a peft LoRA adapter, the site's private head (``head.safetensors``)
and ``labels.json`` with ``"modality": "vision"`` and the input preprocessing (``image_size``, ``mean``, ``std``).
:func:`predict_images` labels image files with it, preprocessed like the site's training images.
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from fedbip_nvflare.client.trainer_base import HEAD_FILE, LABELS_FILE
from fedbip_nvflare.data.images import IMAGE_EXTENSIONS, read_images
from fedbip_nvflare.models.pixels import normalize
from fedbip_nvflare.models.vision import ImageClassifier, backbone_feature_size, load_vision_backbone
from fedbip_nvflare.predict import (
    attach_adapter,
    base_model_of,
    check_positive,
    load_private_head,
    read_folder_info,
    read_label_names,
    top_labels,
)

IMAGE_PREDICTION_FIELDS = ("image", "label", "score")


def is_image_classifier(adapter_dir: str) -> bool:
    """Whether a personalized model folder's ``labels.json`` says ``"modality": "vision"``."""
    try:
        info = read_folder_info(adapter_dir, LABELS_FILE, [], "ImageSiteTrainer.save_personalized")
    except (FileNotFoundError, ValueError):
        return False
    return info.get("modality") == "vision"


def image_files(path: str) -> List[str]:
    """The images to label: ``path`` itself if it is a file, else every image file below the folder, sorted.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A folder without image files.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"input not found: {path}; pass an image file or a folder of images")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise ValueError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below it")
    return files


def load_personalized_image_classifier(
    adapter_dir: str, model: Optional[str] = None, device: Optional[str] = None
) -> Tuple[ImageClassifier, List[str], Dict[str, Any]]:
    """Loads a personalized image-classifier folder: backbone + LoRA adapter + private head.

    Args:
        adapter_dir: Folder with ``adapter_config.json`` (and weights), ``head.safetensors`` and ``labels.json``.
        model: Base model overriding ``base_model`` of ``labels.json`` (``"torchvision/mobilenet_v2"``, a
            MobileNetV2 checkpoint, or an HF image model); it must be the one the adapter was trained on.
        device: torch device (default: CUDA if available, else CPU).

    Returns:
        ``(model, label_names, info)``: the classifier in eval mode, the class of each logit, ``labels.json``.

    Raises:
        FileNotFoundError: The folder or one of its files is missing.
        ValueError: A malformed ``labels.json`` (no ``image_size`` / ``mean`` / ``std``), or an adapter or head
            that does not fit the base model.
    """
    info = read_folder_info(adapter_dir, LABELS_FILE, [HEAD_FILE], "ImageSiteTrainer.save_personalized")
    missing = [k for k in ("image_size", "mean", "std") if k not in info]
    if missing:
        raise ValueError(
            f"{os.path.join(adapter_dir, LABELS_FILE)} lacks the image preprocessing {missing}: it was not written by "
            "ImageSiteTrainer.save_personalized"
        )
    label_names = read_label_names(adapter_dir, info)
    base = base_model_of(adapter_dir, LABELS_FILE, info, model)
    backbone, _ = load_vision_backbone(base)
    feature_size = backbone_feature_size(backbone)
    classifier = ImageClassifier(attach_adapter(backbone, adapter_dir, base), feature_size, len(label_names))
    load_private_head(classifier, adapter_dir, base)
    classifier.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    classifier.eval()
    return classifier, label_names, info


@torch.no_grad()
def predict_images(
    adapter_dir: str,
    input_path: str,
    model: Optional[str] = None,
    batch_size: int = 32,
    device: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Labels image files with a personalized image classifier.

    Images are resized and centre-cropped to the saved ``image_size``, converted to RGB and normalised with the
    saved ``mean`` / ``std``, as in training.

    Args:
        adapter_dir: Personalized image-classifier folder (see :func:`load_personalized_image_classifier`).
        input_path: An image file, or a folder searched recursively for image files.
        model: Base model overriding ``base_model`` of ``labels.json``.
        batch_size: Images per forward pass.
        device: torch device (default: CUDA if available, else CPU).

    Returns:
        One ``{"image": path, "label": str, "score": float}`` per image, in sorted path order; ``score`` is the
        softmax probability of the predicted label.

    Raises:
        FileNotFoundError: The input, the folder or one of its files is missing.
        ValueError: An unreadable image, a folder without images, a malformed model folder or a bad batch size.
    """
    check_positive("batch_size", batch_size)
    paths = image_files(input_path)  # before loading the model: input errors surface at once
    classifier, label_names, info = load_personalized_image_classifier(adapter_dir, model=model, device=device)
    rows: List[Dict[str, Any]] = []
    target = next(classifier.parameters()).device
    for b in range(0, len(paths), batch_size):
        batch: Sequence[str] = paths[b : b + batch_size]
        pixels = normalize(read_images(batch, int(info["image_size"])), info["mean"], info["std"])
        logits = classifier(pixels.to(target)).float().cpu()
        rows += [{"image": p, "label": lbl, "score": s} for p, (lbl, s) in zip(batch, top_labels(logits, label_names))]
    return rows
