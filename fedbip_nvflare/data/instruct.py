"""Instruction data for causal LMs: site JSONL files, the prompt template and the masked-loss encoding.

A record is ``{"instruction": str, "input": str (optional), "output": str}``. The prompt is :data:`PROMPT_TEMPLATE`
(:data:`PROMPT_TEMPLATE_NO_INPUT` when the input is empty) rendered and tokenised as one string; the response is
the output's tokens followed by EOS. Training sequences are ``prompt + response``, and only the response tokens
(EOS included) carry a label: the prompt and the padding get ``IGNORE_INDEX``. Generation starts from exactly the
same prompt tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from fedbip_nvflare.data.config import label_space_of
from fedbip_nvflare.data.split import check_test_fraction, split_indices
from fedbip_nvflare.data.text import read_json_objects

IGNORE_INDEX = -100
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
PROMPT_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass(frozen=True)
class InstructExample:
    """One instruction-following example.

    Attributes:
        instruction: What to do.
        output: The reference response.
        input: The text the instruction applies to ("" if none).
        task: The record's task ("" if none; Flan files name it, and a test file of several tasks is split by it).
        category: The task's category ("" if none).
    """

    instruction: str
    output: str
    input: str = ""
    task: str = ""
    category: str = ""


@dataclass
class InstructSplit:
    """One split of an instruction task."""

    examples: list[InstructExample]

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class InstructTaskData:
    """A site's instruction task: its name, disjoint train/test splits and, if it has one, its answer set.

    Attributes:
        task: Task name.
        train: Training split.
        test: Evaluation split.
        label_names: The task's possible answers when it has a closed answer set (a suite's classification task
            phrased as an instruction), else empty.
    """

    task: str
    train: InstructSplit
    test: InstructSplit
    label_names: list[str] = field(default_factory=list)

    @property
    def label_space(self) -> str:
        """A fingerprint of the answer set (sites with equal fingerprints answer from the same set)."""
        return label_space_of(["causal-lm", *self.label_names])


def render_prompt(example: InstructExample) -> str:
    """The prompt text of an example (the template filled in; no response)."""
    if example.input:
        return PROMPT_TEMPLATE.format(instruction=example.instruction, input=example.input)
    return PROMPT_TEMPLATE_NO_INPUT.format(instruction=example.instruction)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_prompt(example: InstructExample, tokenizer, max_tokens: int) -> list[int]:
    """The prompt's token ids, at most ``max_tokens``: the input is cut (from its end) until the prompt fits.

    The prompt is always tokenised as one rendered string (with the tokenizer's special tokens, e.g. BOS), so what
    training saw is what generation gets.

    Raises:
        ValueError: The prompt without any input is longer than ``max_tokens`` (raise ``max_length``).
    """
    ids = _ids(tokenizer, render_prompt(example), special=True)
    if len(ids) <= max_tokens:
        return ids
    words = _ids(tokenizer, example.input, special=False)
    keep = max(0, len(words) - (len(ids) - max_tokens))
    while True:
        cut = InstructExample(example.instruction, example.output, tokenizer.decode(words[:keep]).strip())
        ids = _ids(tokenizer, render_prompt(cut), special=True)
        if len(ids) <= max_tokens:
            return ids
        if keep == 0:
            raise ValueError(
                f"the prompt of instruction {example.instruction[:60]!r} has {len(ids)} tokens without its input, "
                f"more than the {max_tokens} allowed; raise max_length or shorten the instruction"
            )
        keep = max(0, keep - max(1, len(ids) - max_tokens))


def encode_example(example: InstructExample, tokenizer, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of a training sequence ``prompt + response + EOS`` of at most ``max_length`` tokens.

    The input is shortened first so the whole response fits; only when the prompt without input leaves too little
    room is the response cut (then without EOS). Labels are ``IGNORE_INDEX`` on the prompt and the token ids on the
    response (the model's loss shifts them by one position itself).

    Raises:
        ValueError: The prompt without input leaves no room for a single response token.
    """
    response = _ids(tokenizer, example.output, special=False) + [tokenizer.eos_token_id]
    shortest = _ids(tokenizer, render_prompt(InstructExample(example.instruction, example.output)), special=True)
    if len(shortest) + len(response) <= max_length:
        prompt = encode_prompt(example, tokenizer, max_length - len(response))
    else:
        prompt = shortest
    response = response[: max_length - len(prompt)]
    if not response:
        raise ValueError(
            f"max_length={max_length} leaves no room for the response of instruction {example.instruction[:60]!r} "
            f"(the prompt alone has {len(prompt)} tokens); raise max_length"
        )
    return prompt + response, [IGNORE_INDEX] * len(prompt) + response


def _text_field(path: str, where: str, record: Mapping[str, Any], key: str, required: bool) -> str:
    value = record.get(key, None if required else "")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        kind = "a non-empty string" if required else "a string"
        raise ValueError(f"{path}: {where}: {key!r} must be {kind}, got {value!r:.80}")
    return value.strip()


def read_instruct_file(path: str, require_output: bool = True) -> list[InstructExample]:
    """Reads a JSON-lines file (or a ``.json`` array) of ``{"instruction", "input" (optional), "output"}`` objects.

    Optional ``task`` and ``category`` fields (Flan-style records) are kept on each example.

    Args:
        path: The file.
        require_output: Every record needs a non-empty ``output`` (training and test data); without it (prompts to
            answer), ``output`` is optional and ``""`` where absent.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Invalid JSON, a record that is not an object, a missing or empty ``instruction`` / ``output``,
            a non-string field, or no records (the message names the file and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"instruction data file not found: {path}")
    examples = []
    for where, record in read_json_objects(path):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: {where}: expected an object with 'instruction' and 'output', got {record!r:.80}")
        required = ("instruction", "output") if require_output else ("instruction",)
        missing = [k for k in required if k not in record]
        if missing:
            raise ValueError(f"{path}: {where}: missing field(s) {missing}; found {sorted(record)}")
        examples.append(
            InstructExample(
                instruction=_text_field(path, where, record, "instruction", True),
                output=_text_field(path, where, record, "output", require_output),
                input=_text_field(path, where, record, "input", False),
                task=_text_field(path, where, record, "task", False),
                category=_text_field(path, where, record, "category", False),
            )
        )
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def _of_task(path: str, examples: list[InstructExample], task: str) -> list[InstructExample]:
    """The examples of ``task`` when the file's records name several tasks (all of them otherwise)."""
    named = sorted({e.task for e in examples if e.task})
    if len(named) < 2 and (not named or named == [task]):
        return examples
    chosen = [e for e in examples if e.task == task]
    if not chosen:
        raise ValueError(f"{path}: no record with task {task!r}; the file's tasks are {named} (set the site's 'task')")
    return chosen


def load_instruct_files(
    train_path: str,
    test_path: str | None = None,
    task: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> InstructTaskData:
    """Loads a site's instruction task from its own files.

    Args:
        train_path: Training file (see :func:`read_instruct_file`).
        test_path: Evaluation file; without it a seeded ``test_fraction`` of the training file is held out.
        task: Task name; defaults to the training records' ``task`` field when they name one task, else the stem of
            ``train_path``. Files whose records name several tasks (a Flan test file) keep only this task's records.
        test_fraction: Held-out fraction when ``test_path`` is None, in (0, 1); at least one example each side.
        seed: Seed of the split and of the subsampling.
        max_train: Keep at most this many training examples (seeded random subset, file order kept).
        max_test: Keep at most this many test examples.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: Malformed files, a bad ``test_fraction``, or a single example to split.
    """
    train = read_instruct_file(train_path)
    named = sorted({e.task for e in train if e.task})
    task = task or (named[0] if len(named) == 1 else os.path.splitext(os.path.basename(train_path))[0])
    train = _of_task(train_path, train, task)
    test = train
    if test_path is not None:
        test = _of_task(test_path, read_instruct_file(test_path), task)
    else:
        check_test_fraction(test_fraction)
        if len(train) < 2:
            raise ValueError(f"{train_path}: needs at least 2 examples to hold out a test split (or pass test_path)")
    n_test = None if test_path is None else len(test)
    split = split_indices(np.zeros(len(train), dtype=np.int64), 1, n_test, test_fraction, seed, max_train, max_test)
    return InstructTaskData(
        task=task,
        train=InstructSplit([train[i] for i in split.train]),
        test=InstructSplit([test[i] for i in split.test]),
    )
