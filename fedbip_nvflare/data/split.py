"""The seeded held-out split and subsampling every site-file reader shares (text, instruction, image files).

One generator, ``numpy.random.default_rng(seed)``, draws in a fixed order: the held-out split (one permutation per
class, in class order) when the site has no test file, then the training subsample, then the test subsample. Every
reader calls :func:`split_indices`, so a site's split depends on its labels, options and seed only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SplitIndices:
    """Which records a site trains and tests on.

    Attributes:
        train: Sorted indices into the training records.
        test: Sorted indices into the test records (into the training records when ``held_out``).
        held_out: The test split was held out of the training records (there was no test file).
    """

    train: np.ndarray
    test: np.ndarray
    held_out: bool


def check_test_fraction(test_fraction: Any) -> float:
    """``test_fraction`` as a float.

    Raises:
        ValueError: It is not in (0, 1).
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return float(test_fraction)


def held_out_mask(labels: np.ndarray, num_classes: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A stratified held-out mask: ``fraction`` of each class (at least one of a class with two or more examples,
    never all of a class).

    Args:
        labels: ``[N]`` class indices in ``[0, num_classes)``.
        num_classes: Number of classes (one permutation is drawn per class, in class order).
        fraction: Held-out fraction, in (0, 1).
        rng: The generator (advanced).

    Returns:
        ``[N]`` bool, True for the held-out examples.
    """
    held = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        held[idx[:n]] = True
    return held


def subsample(n: int, limit: Any, name: str, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` items, a seeded random subset (all of them, drawing nothing,
    when ``limit`` is None or at least ``n``).

    Raises:
        ValueError: ``limit`` is not an int >= 1 (``name`` is the option named in the message).
    """
    if limit is None:
        return np.arange(n)
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"{name} must be an int >= 1, got {limit!r}")
    return np.arange(n) if limit >= n else np.sort(rng.choice(n, size=int(limit), replace=False))


def split_indices(
    train_labels: np.ndarray,
    num_classes: int,
    n_test_records: int | None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> SplitIndices:
    """A site's train/test indices: the held-out split (without a test file) and the subsamples.

    Args:
        train_labels: ``[N]`` class indices of the training records (all 0 for a task without classes: the split
            is then a plain random ``test_fraction``).
        num_classes: Number of classes.
        n_test_records: Number of records of the site's test file, or None to hold the test split out of the
            training records.
        test_fraction: Held-out fraction when there is no test file, in (0, 1).
        seed: Seed of the split and of the subsampling.
        max_train: Keep at most this many training records.
        max_test: Keep at most this many test records.

    Raises:
        ValueError: A bad ``test_fraction`` (without a test file), ``max_train`` or ``max_test``.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(train_labels)
    if n_test_records is None:
        held = held_out_mask(labels, num_classes, check_test_fraction(test_fraction), rng)
        train, test = np.flatnonzero(~held), np.flatnonzero(held)
    else:
        train, test = np.arange(len(labels)), np.arange(n_test_records)
    train = train[subsample(len(train), max_train, "max_train", rng)]
    test = test[subsample(len(test), max_test, "max_test", rng)]
    return SplitIndices(train, test, n_test_records is None)
