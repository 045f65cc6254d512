"""pad_sequences: right padding for training/classification, left padding for generation prompts."""

import pytest
import torch

from fedbip_nvflare.models.batching import pad_sequences


def test_right_padding_keeps_tokens_first_and_masks_the_rest():
    values, mask = pad_sequences([[5, 6, 7], [8], []], pad_value=0)
    assert values.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert values.dtype == mask.dtype == torch.long


def test_left_padding_ends_every_row_in_the_last_column():
    values, mask = pad_sequences([[1, 2], [3, 4, 5]], pad_value=-100, left=True)
    assert values.tolist() == [[-100, 1, 2], [3, 4, 5]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_no_sequences_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        pad_sequences([], pad_value=0)
