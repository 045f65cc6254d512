"""Site text-classification data: the containers every trainer consumes and loaders for files a site points at."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedbip_nvflare.data.config import LabelledTask
from fedbip_nvflare.data.split import split_indices

_SEPARATORS = {".csv": ",", ".tsv": "\t"}
_JSON_EXTS = (".jsonl", ".json")


@dataclass
class TextSplit:
    """One split of a text-classification task.

    Attributes:
        texts: Input texts.
        labels: Class indices into the task's ``label_names``, same length as ``texts``.
    """

    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TextTaskData(LabelledTask):
    """A site's task: its name, label space and disjoint train/test splits.

    Attributes:
        task: Task name.
        label_names: Class names; label ``i`` of a split means ``label_names[i]``.
        train: Training split.
        test: Evaluation split.
    """

    task: str
    label_names: list[str]
    train: TextSplit
    test: TextSplit


SHIFTED_SUFFIX = "-shifted"


def shift_labels(data: TextTaskData, shift: int = 1) -> TextTaskData:
    """The same texts with every label ``y`` replaced by ``(y + shift) mod C``: a site that conflicts with the others.

    The label names are unchanged, so the site claims, for instance, that a text about hockey is about
    baseball. With ``shift`` not a multiple of C no example keeps its label. The task is renamed
    ``<task>-shifted``.

    Raises:
        ValueError: Fewer than two classes.
    """
    c = len(data.label_names)
    if c < 2:
        raise ValueError(f"shifting labels needs at least 2 classes, task {data.task!r} has {c}")

    def shifted(split: TextSplit) -> TextSplit:
        return TextSplit(list(split.texts), [(y + shift) % c for y in split.labels])

    return TextTaskData(data.task + SHIFTED_SUFFIX, list(data.label_names), shifted(data.train), shifted(data.test))


def site_list(value: object) -> list[str]:
    """Site names from a list or a comma-separated string (``"site-9,site-10"``); ``None`` gives []."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def load_text_file(path: str) -> tuple[list[str], list[str]]:
    """Read ``(texts, labels)`` from a CSV/TSV file with a header or a JSON-lines file.

    CSV/TSV (``.csv``, ``.tsv``) need the columns ``text`` and ``label`` (matched case-insensitively).
    JSON files (``.jsonl``, ``.json``) hold one ``{"text": ..., "label": ...}`` object per line; a ``.json``
    file may instead hold a single JSON array of such objects.

    Args:
        path: File to read; the format is chosen by its extension.

    Returns:
        Texts and their labels, both as strings.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For an unsupported extension, a missing column/key, a malformed line or an empty file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in _SEPARATORS:
        df = pd.read_csv(path, sep=_SEPARATORS[ext], dtype=str, keep_default_na=False)
        cols = {str(c).strip().lower(): c for c in df.columns}
        missing = [c for c in ("text", "label") if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found columns {list(df.columns)}")
        texts, labels = df[cols["text"]].tolist(), df[cols["label"]].str.strip().tolist()
    elif ext in _JSON_EXTS:
        texts, labels = _read_json_records(path)
    else:
        raise ValueError(f"{path}: unsupported extension {ext!r}; use one of .csv, .tsv, .jsonl, .json")
    if not texts:
        raise ValueError(f"{path}: no examples")
    empty = [i for i, lab in enumerate(labels) if lab == ""]
    if empty:
        raise ValueError(f"{path}: {len(empty)} example(s) with an empty label (first at row {empty[0] + 1})")
    return texts, labels


def read_json_objects(path: str) -> list[tuple[str, object]]:
    """The records of a JSON-lines file (or of a ``.json`` file holding one array) with where each one is.

    Returns:
        ``[(where, record)]``, ``where`` being ``"line N"`` or ``"item N"`` for error messages.

    Raises:
        ValueError: Invalid JSON (names the line).
    """
    with open(path, encoding="utf-8") as f:
        content = f.read()
    if path.lower().endswith(".json") and content.lstrip().startswith("["):
        try:
            return [(f"item {i}", rec) for i, rec in enumerate(json.loads(content), start=1)]
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from e
    records = []
    # Lines end at "\n" only: str.splitlines() would also split at Unicode separators inside JSON strings.
    for lineno, line in enumerate(content.split("\n"), start=1):
        if line.strip():
            try:
                records.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: invalid JSON: {e}") from e
    return records


def _read_json_records(path: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for where, rec in read_json_objects(path):
        if not isinstance(rec, dict) or "text" not in rec or "label" not in rec:
            raise ValueError(f"{path}: {where}: expected an object with keys 'text' and 'label', got {rec!r:.80}")
        texts.append(str(rec["text"]))
        labels.append(str(rec["label"]).strip())
    return texts, labels


def load_site_data(
    train_path: str,
    test_path: str | None = None,
    task: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> TextTaskData:
    """Load a site's task from its own files.

    Args:
        train_path: Training file (see ``load_text_file``).
        test_path: Evaluation file; without it, ``test_fraction`` of each class of the training file is held out
            (deterministically for ``seed``; at least one example per class with two or more examples).
        task: Task name; defaults to the stem of ``train_path``.
        test_fraction: Held-out fraction when ``test_path`` is None, in (0, 1).
        seed: Seed of the split and of the subsampling (see :func:`fedbip_nvflare.data.split.split_indices`).
        max_train: Keep at most this many training examples (random, deterministic for ``seed``).
        max_test: Keep at most this many test examples (random, deterministic for ``seed``).

    Returns:
        The task with ``label_names`` = sorted set of training labels; both splits keep file order.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: For malformed files, a bad ``test_fraction``, or test labels absent from the training file.
    """
    texts, train_str = load_text_file(train_path)
    label_names = sorted(set(train_str))
    index = {name: i for i, name in enumerate(label_names)}
    labels = [index[s] for s in train_str]
    test_texts, test_labels = texts, labels
    if test_path is not None:
        test_texts, test_str = load_text_file(test_path)
        unknown = sorted(set(test_str) - set(label_names))
        if unknown:
            raise ValueError(f"{test_path}: labels {unknown} do not occur in the training file {train_path}")
        test_labels = [index[s] for s in test_str]
    n_test = None if test_path is None else len(test_texts)
    split = split_indices(np.asarray(labels), len(label_names), n_test, test_fraction, seed, max_train, max_test)
    return TextTaskData(
        task=task or os.path.splitext(os.path.basename(train_path))[0],
        label_names=label_names,
        train=TextSplit([texts[i] for i in split.train], [labels[i] for i in split.train]),
        test=TextSplit([test_texts[i] for i in split.test], [test_labels[i] for i in split.test]),
    )
