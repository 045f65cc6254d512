"""Token sequences of different lengths stacked into padded batches (dynamic padding) for a model's input."""

from typing import Sequence, Tuple

import torch


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_value: int, left: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stacks integer sequences into one ``[len(sequences), longest]`` long tensor.

    Args:
        sequences: One sequence of token ids (or labels) per row; at least one row.
        pad_value: Fills each row's positions beyond its own length.
        left: Pad before the tokens, so every row ends in the last column (prompts to continue by generation);
            default: after them.

    Returns:
        ``(values, mask)``: ``mask`` is 1 where the row has one of its own values, 0 at padding.

    Raises:
        ValueError: ``sequences`` is empty.
    """
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    width = max(len(s) for s in sequences)
    values = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        values[row, cols] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return values, mask
