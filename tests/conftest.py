"""Shared test set-up: offline Hugging Face, and the fetched offline assets when a test needs them."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Local folder of the real all-MiniLM-L6-v2 (fetched by `make test` before pytest runs)."""
    from fedbip_nvflare import assets

    path = assets.model_path(MODEL_ID)
    if path is None:
        pytest.fail("offline model missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    return path
