"""Model id / path resolution with offline copies."""

import pytest

from fedbip_nvflare.models import resolve_model_path


def test_existing_folder_is_used_as_is(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_known_hub_id_resolves_to_offline_copy(minilm_path):
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path


def test_unknown_hub_id_is_passed_through():
    assert resolve_model_path("org/some-model") == "org/some-model"


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="model"):
        resolve_model_path("")
