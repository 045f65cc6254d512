"""Federated Flan suites read from a data directory: ``flan-8`` (FedDPA layout) and ``flan-pairs`` (FedOA layout).

Both read Flan-style instruction records (``instruction``, optional ``input``, ``output``, optional ``task`` /
``category``; see :func:`fedbip_nvflare.data.instruct.read_instruct_file`) from a directory given by the site's data
config (``data_dir``), so the same code runs on any directory of the same layout:

* ``flan-8``: ``local_training_<k>.json`` (k = 0, 1, ...; a JSON array or JSON lines), one task per file, and one
  test file (``test.jsonl``, or the only other ``*.json``/``*.jsonl`` file) holding every task's test records with
  a ``task`` field. Site-(k+1) trains on ``local_training_<k>.json`` and is tested on the test records of its task.
  One client per task (the FedBip paper's NLP setting); every site is a group of its own.
* ``flan-pairs``: ``<category>/<task>_train.jsonl`` and ``<category>/<task>_test.jsonl``, one task per file pair
  (named by the file stem; the records' own ``task``/``category`` fields are not used). Sites take the tasks in
  sorted (category, task) order; the tasks of a category are partners (the ground-truth groups of
  :func:`flan_suite_groups`).

Each site takes a seeded subset of ``n_train`` training and ``n_test`` test records (the seed and the site's index
pick it, file order kept). Instructions longer than ``max_instruction_words`` words keep their first and last words
around ``" ... "`` (the options and the question of a Flan prompt sit at its ends), so prompts fit a small
``max_length``. A task whose training outputs take few distinct values is a labelled task: its ``label_names`` are
those values, and exact match is its natural metric.
"""

from __future__ import annotations

import glob
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fedbip_nvflare.data.instruct import InstructExample, InstructSplit, InstructTaskData, read_instruct_file
from fedbip_nvflare.data.sites import site_index

FLAN_8 = "flan-8"
FLAN_PAIRS = "flan-pairs"
FLAN_SUITES = (FLAN_8, FLAN_PAIRS)
# At most this many distinct training outputs make a task's outputs labels.
MAX_LABELS = 20
_TRAIN_FILE = re.compile(r"local_training_(\d+)\.jsonl?")
_ELLIPSIS = " ... "


@dataclass(frozen=True)
class FlanTask:
    """One client's task in a Flan directory.

    Attributes:
        task: Task name (the records' ``task`` field, or the file stem).
        category: Category (the records' ``category`` field or the ``flan-pairs`` folder; "" if none).
        train_path: The training file.
        test_path: The test file (may hold other tasks' records too; only ``task``'s are used).
    """

    task: str
    category: str
    train_path: str
    test_path: str


def _require_dir(suite: str, data_dir: str | None) -> str:
    if not data_dir:
        raise ValueError(
            f"suite {suite!r} reads its data from a directory: set 'data_dir' in the data config "
            "(the benchmark's --data-dir, e.g. ../shared/data/flan-ds1)"
        )
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"suite {suite!r}: data_dir {data_dir!r} is not a directory")
    return data_dir


def _only_task(path: str, examples: list[InstructExample]) -> str:
    tasks = sorted({e.task for e in examples if e.task})
    if len(tasks) > 1:
        raise ValueError(f"{path}: a client's training file must hold one task, found {tasks}")
    return tasks[0] if tasks else os.path.splitext(os.path.basename(path))[0]


def _flan8_tasks(data_dir: str) -> list[FlanTask]:
    numbered = {}
    for path in os.listdir(data_dir):
        match = _TRAIN_FILE.fullmatch(path)
        if match:
            numbered[int(match.group(1))] = os.path.join(data_dir, path)
    if not numbered:
        raise FileNotFoundError(f"flan-8: no local_training_<k>.json files in {data_dir}")
    if sorted(numbered) != list(range(len(numbered))):
        raise ValueError(f"flan-8: {data_dir}: training files must be numbered 0..K-1, found {sorted(numbered)}")
    others = [
        p
        for p in sorted(glob.glob(os.path.join(data_dir, "*.json*")))
        if p.endswith((".json", ".jsonl")) and p not in numbered.values()
    ]
    default = os.path.join(data_dir, "test.jsonl")
    test_path = default if os.path.exists(default) else (others[0] if len(others) == 1 else None)
    if test_path is None:
        raise FileNotFoundError(
            f"flan-8: {data_dir}: no test file; expected test.jsonl (or exactly one other .json/.jsonl), found "
            f"{[os.path.basename(p) for p in others]}"
        )
    tasks = []
    for k in sorted(numbered):
        examples = read_instruct_file(numbered[k])
        categories = sorted({e.category for e in examples if e.category})
        tasks.append(FlanTask(_only_task(numbered[k], examples), ",".join(categories), numbered[k], test_path))
    return tasks


def _pairs_tasks(data_dir: str) -> list[FlanTask]:
    tasks = []
    for train_path in sorted(glob.glob(os.path.join(data_dir, "*", "*_train.jsonl"))):
        test_path = train_path[: -len("_train.jsonl")] + "_test.jsonl"
        if not os.path.exists(test_path):
            raise FileNotFoundError(f"flan-pairs: {train_path} has no test file {os.path.basename(test_path)}")
        category = os.path.basename(os.path.dirname(train_path))
        tasks.append(FlanTask(os.path.basename(train_path)[: -len("_train.jsonl")], category, train_path, test_path))
    if not tasks:
        raise FileNotFoundError(f"flan-pairs: no <category>/<task>_train.jsonl files in {data_dir}")
    return tasks


def flan_tasks(suite: str, data_dir: str | None) -> list[FlanTask]:
    """The clients' tasks of a Flan suite in ``data_dir``, site-1 first (see the module docstring).

    Raises:
        ValueError: Unknown suite, no ``data_dir``, or a malformed layout or file.
        FileNotFoundError: The directory or an expected file is missing.
    """
    if suite not in FLAN_SUITES:
        raise ValueError(f"unknown Flan suite {suite!r}; valid suites: {list(FLAN_SUITES)}")
    data_dir = _require_dir(suite, data_dir)
    return _flan8_tasks(data_dir) if suite == FLAN_8 else _pairs_tasks(data_dir)


def shorten_instruction(text: str, max_words: int) -> str:
    """``text`` with at most ``max_words`` words: its first and last words around ``" ... "`` (whitespace kept
    inside the kept parts, so option lists stay one per line). Shorter texts are returned unchanged."""
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_words:
        return text
    head = max_words // 2
    tail = max_words - head
    return (
        text[: words[head - 1].end()] + _ELLIPSIS + text[words[len(words) - tail].start() :]
        if head
        else (_ELLIPSIS.lstrip() + text[words[len(words) - tail].start() :])
    )


def _subset(examples: list[InstructExample], n: int, rng: np.random.Generator, max_words: int) -> InstructSplit:
    if n < len(examples):
        examples = [examples[i] for i in np.sort(rng.choice(len(examples), size=n, replace=False))]
    return InstructSplit(
        [
            InstructExample(shorten_instruction(e.instruction, max_words), e.output, e.input, e.task, e.category)
            for e in examples
        ]
    )


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def load_flan_suite_site(
    suite: str,
    site: str,
    n_train: int = 300,
    n_test: int = 200,
    seed: int = 0,
    data_dir: str | None = None,
    max_instruction_words: int = 10_000,
) -> InstructTaskData:
    """Loads one client's task of a Flan suite (see the module docstring).

    Args:
        suite: ``"flan-8"`` or ``"flan-pairs"``.
        site: ``"site-k"``, 1 <= k <= the number of tasks in ``data_dir``.
        n_train: Training records (a seeded subset; all if the file has fewer).
        n_test: Test records of the site's task (a seeded subset; all if there are fewer).
        seed: Sampling seed; the same arguments always give the same data.
        data_dir: The suite's directory.
        max_instruction_words: Longer instructions are shortened (see :func:`shorten_instruction`).

    Returns:
        The site's task; ``label_names`` are its distinct training outputs (sorted) when there are at most
        :data:`MAX_LABELS` of them, else empty.

    Raises:
        ValueError: Unknown suite or site, a site beyond the directory's tasks, bad sizes, malformed files, or no
            test record of the site's task.
        FileNotFoundError: The directory or a file is missing.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("max_instruction_words", max_instruction_words)):
        _check_positive(name, value)
    tasks = flan_tasks(suite, data_dir)
    k = site_index(site)
    if k >= len(tasks):
        raise ValueError(
            f"{suite}: {data_dir} holds {len(tasks)} tasks, one per client, so sites are site-1..site-{len(tasks)}; "
            f"got {site!r} (use at most {len(tasks)} clients)"
        )
    flan = tasks[k]
    train = read_instruct_file(flan.train_path)
    test = read_instruct_file(flan.test_path)
    if suite == FLAN_8:  # one test file for every task
        test = [e for e in test if e.task == flan.task]
    if not test:
        raise ValueError(f"{flan.test_path}: no test record with task {flan.task!r} (the task of {flan.train_path})")
    rng = np.random.default_rng([int(seed), k, zlib.crc32(flan.task.encode())])
    outputs = Counter(e.output for e in train)
    return InstructTaskData(
        task=flan.task,
        train=_subset(train, n_train, rng, max_instruction_words),
        test=_subset(test, n_test, rng, max_instruction_words),
        label_names=sorted(outputs) if len(outputs) <= MAX_LABELS else [],
    )


def flan_suite_groups(suite: str, num_clients: int, data_dir: str | None) -> dict[str, str]:
    """Ground-truth groups of a Flan suite's sites (for the oracle baseline).

    Returns:
        ``{site: group}`` for site-1..site-``num_clients``: the task's category on ``flan-pairs`` (partners share
        it), the task itself on ``flan-8`` (one client per task: every site is a group of its own).

    Raises:
        ValueError: More clients than the directory has tasks, or the errors of :func:`flan_tasks`.
    """
    tasks = flan_tasks(suite, data_dir)
    if not isinstance(num_clients, int) or not 1 <= num_clients <= len(tasks):
        raise ValueError(
            f"{suite}: num_clients must be an int in 1..{len(tasks)} (tasks in {data_dir}), got {num_clients}"
        )
    return {f"site-{k + 1}": (t.category if suite == FLAN_PAIRS else t.task) for k, t in enumerate(tasks[:num_clients])}
