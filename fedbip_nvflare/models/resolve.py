"""Resolving a model id or path, with the offline copies of known models."""

import os

from fedbip_nvflare import assets


def resolve_model_path(model_name_or_path: str) -> str:
    """Where to load a model from.

    An existing local folder is used as is. A known hub id (e.g. ``sentence-transformers/all-MiniLM-L6-v2``)
    whose packaged offline copy was fetched (``python -m fedbip_nvflare.assets fetch``) resolves to that
    copy, which holds the same weights. Anything else is returned unchanged for ``from_pretrained``.

    Args:
        model_name_or_path: HF model id or local folder.

    Returns:
        A local folder or the unchanged id.

    Raises:
        ValueError: The argument is empty.
        FileNotFoundError: A local path that does not exist.
    """
    if not isinstance(model_name_or_path, str) or not model_name_or_path.strip():
        raise ValueError("model must be a Hugging Face model id or a local model folder, got an empty value")
    if os.path.isdir(model_name_or_path):
        return model_name_or_path
    if os.path.isabs(model_name_or_path) or model_name_or_path.startswith((".", "~")):
        raise FileNotFoundError(
            f"model folder {model_name_or_path!r} does not exist: pass an existing folder with config.json and "
            "weights, or a Hugging Face model id"
        )
    return assets.model_path(model_name_or_path) or model_name_or_path
