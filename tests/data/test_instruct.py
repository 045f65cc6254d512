"""Tests for instruction data (fedbip_nvflare.data.instruct) and the offline ``instruct-tasks`` suite."""

import json

import pytest

from fedbip_nvflare.data.instruct import (
    IGNORE_INDEX,
    InstructExample,
    encode_example,
    encode_prompt,
    load_instruct_files,
    read_instruct_file,
    render_prompt,
)
from fedbip_nvflare.data.instruct_suite import INSTRUCT_TASKS, load_instruct_suite_site
from fedbip_nvflare.data.site_data import load_instruct_task_data
from fedbip_nvflare.models.causal_lm import DEFAULT_CAUSAL_LM, load_causal_lm_tokenizer, locate_causal_lm

EXAMPLE = InstructExample(
    "Is the sentiment of this review positive or negative?",
    "positive",
    "A warm, funny and surprisingly moving film about two old friends on one last road trip.",
)


@pytest.fixture(scope="module")
def tokenizer():
    from fedbip_nvflare import assets

    if assets.model_path(DEFAULT_CAUSAL_LM) is None:
        pytest.fail("offline SmolLM2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    return load_causal_lm_tokenizer(locate_causal_lm(DEFAULT_CAUSAL_LM))


def _ids(tokenizer, text, special=False):
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def test_only_the_response_and_eos_are_supervised(tokenizer):
    ids, labels = encode_example(EXAMPLE, tokenizer, max_length=256)
    prompt = _ids(tokenizer, render_prompt(EXAMPLE), special=True)
    response = _ids(tokenizer, EXAMPLE.output)
    assert ids == prompt + response + [tokenizer.eos_token_id]
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt) :] == response + [tokenizer.eos_token_id]
    # The model predicts token t+1 at position t: supervised positions are those whose next label is not ignored.
    assert sum(label != IGNORE_INDEX for label in labels[1:]) == len(response) + 1
    assert encode_prompt(EXAMPLE, tokenizer, 256) == prompt, "generation starts from exactly the trained prompt"


def test_batches_supervise_exactly_response_plus_eos(tokenizer):
    from fedbip_nvflare.client.causal_lm import CausalLMSiteTrainer

    examples = [EXAMPLE, InstructExample("Say hi.", "hi there")]
    trainer = CausalLMSiteTrainer.__new__(CausalLMSiteTrainer)  # only its batching: no model needed
    trainer.tokenizer = tokenizer
    trainer._train = [encode_example(e, tokenizer, 256) for e in examples]
    for index in ([0], [1], [0, 1]):
        input_ids, mask, labels = trainer._train_batch(index)
        expected = sum(len(_ids(tokenizer, examples[i].output)) + 1 for i in index)
        assert int((labels[:, 1:] != IGNORE_INDEX).sum()) == expected
        assert int((labels[mask == 0] != IGNORE_INDEX).sum()) == 0, "padding is never supervised"
        assert int(mask.sum()) == sum(len(trainer._train[i][0]) for i in index)


def test_truncation_cuts_the_input_and_keeps_the_response(tokenizer):
    long = InstructExample(EXAMPLE.instruction, "negative", " ".join(["word"] * 400))
    shortest = len(_ids(tokenizer, render_prompt(InstructExample(long.instruction, long.output)), special=True))
    max_length = shortest + 40
    ids, labels = encode_example(long, tokenizer, max_length)
    response = _ids(tokenizer, "negative") + [tokenizer.eos_token_id]
    assert len(ids) == len(labels) <= max_length
    assert len(ids) > max_length - 5, "the input fills the room the response leaves"
    assert ids[-len(response) :] == response and labels[-len(response) :] == response
    assert tokenizer.decode(ids).count("word") > 10 and "### Response:" in tokenizer.decode(ids)
    prompt = encode_prompt(long, tokenizer, max_length)
    assert max_length - 5 < len(prompt) <= max_length


def test_response_is_cut_only_when_the_prompt_leaves_no_room(tokenizer):
    long_answer = InstructExample("Repeat the word forever.", " ".join(["again"] * 100))
    prompt = _ids(tokenizer, render_prompt(long_answer), special=True)
    ids, labels = encode_example(long_answer, tokenizer, len(prompt) + 10)
    assert len(ids) == len(prompt) + 10 and ids[: len(prompt)] == prompt
    assert tokenizer.eos_token_id not in labels[len(prompt) :], "a cut response has no EOS"
    with pytest.raises(ValueError, match="max_length"):
        encode_example(long_answer, tokenizer, len(prompt))


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


RECORDS = [
    {"instruction": f"Add {i} and 1.", "input": "" if i % 2 else f"{i}", "output": str(i + 1)} for i in range(20)
]


def test_read_jsonl_and_json_array(tmp_path):
    examples = read_instruct_file(_write_jsonl(tmp_path / "a.jsonl", RECORDS))
    assert [e.output for e in examples] == [r["output"] for r in RECORDS]
    assert examples[1].input == "" and examples[2].input == "2"
    array = tmp_path / "a.json"
    array.write_text(json.dumps([{"instruction": "x", "output": "y"}]), encoding="utf-8")
    assert read_instruct_file(str(array)) == [InstructExample("x", "y")]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"instruction": "x"}', r"line 2: missing field\(s\) \['output'\]"),
        ('{"output": "y"}', r"line 2: missing field\(s\) \['instruction'\]"),
        ('{"instruction": "x", "output": ""}', r"line 2: 'output' must be a non-empty string"),
        ('{"instruction": "x", "output": "y", "input": 3}', r"line 2: 'input' must be a string, got 3"),
        ('["x", "y"]', r"line 2: expected an object"),
        ("not json", r"line 2: invalid JSON"),
    ],
)
def test_jsonl_errors_name_the_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_instruct_file(str(path))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_instruct_file(str(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no examples"):
        read_instruct_file(str(empty))


def test_seeded_test_split_is_disjoint_and_reproducible(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", RECORDS)
    a = load_instruct_files(path, test_fraction=0.25, seed=3)
    b = load_instruct_files(path, test_fraction=0.25, seed=3)
    c = load_instruct_files(path, test_fraction=0.25, seed=4)
    assert a.task == "math" and (len(a.train), len(a.test)) == (15, 5)
    assert a.test.examples == b.test.examples and a.test.examples != c.test.examples
    assert not set(a.train.examples) & set(a.test.examples)
    assert len(load_instruct_files(path, max_train=4, max_test=2).train) == 4


def test_site_config_files_and_errors(tmp_path):
    train = _write_jsonl(tmp_path / "train.jsonl", RECORDS[:12])
    test = _write_jsonl(tmp_path / "test.jsonl", RECORDS[12:])
    data = load_instruct_task_data({"train_path": train, "test_path": test, "task": "adding"}, "site-1")
    assert (data.task, len(data.train), len(data.test), data.label_names) == ("adding", 12, 8, [])
    with pytest.raises(ValueError, match=r"unknown data config keys \['label_column'\]"):
        load_instruct_task_data({"train_path": train, "label_column": "y"}, "site-1")
    with pytest.raises(ValueError, match="exactly one of 'suite'"):
        load_instruct_task_data({}, "site-1")
    with pytest.raises(ValueError, match="exactly one of 'suite'"):
        load_instruct_task_data({"suite": "instruct-tasks", "train_path": train}, "site-1")


def _suite_available() -> bool:
    from fedbip_nvflare.assets import require_data_dir

    try:
        require_data_dir()
    except FileNotFoundError:
        return False
    return True


needs_data = pytest.mark.skipif(not _suite_available(), reason="offline datasets not fetched")


@needs_data
def test_suite_gives_each_site_its_task_phrased_as_an_instruction():
    from fedbip_nvflare.data import TEXT_TASKS, load_suite_site

    seen = []
    for k in range(1, len(INSTRUCT_TASKS) + 1):
        data = load_instruct_task_data({"suite": "instruct-tasks", "n_train": 12, "n_test": 6, "seed": 0}, f"site-{k}")
        seen.append(data.task)
        assert (len(data.train), len(data.test)) == (12, 6)
        assert len(set(data.label_names)) == len(data.label_names) >= 2
        for example in data.train.examples + data.test.examples:
            assert example.output in data.label_names
            assert all(answer in example.instruction for answer in data.label_names)
            assert 0 < len(example.input.split()) <= 64
        assert not {e.input for e in data.train.examples} & {e.input for e in data.test.examples}
        # The texts are text-tasks' texts of the same task (the same sampling), cut to max_input_words.
        text = load_suite_site("text-tasks", f"site-{TEXT_TASKS.index(data.task) + 1}", n_train=12, n_test=6, seed=0)
        assert [e.input for e in data.train.examples] == [" ".join(t.split()[:64]) for t in text.train.texts]
        assert [e.output for e in data.train.examples] == [data.label_names[y] for y in text.train.labels]
    assert seen == INSTRUCT_TASKS and len(set(seen)) == 8
    assert load_instruct_suite_site("instruct-tasks", "site-9", n_train=12, n_test=6).task == INSTRUCT_TASKS[0]


@needs_data
def test_suite_options_and_errors():
    short = load_instruct_suite_site("instruct-tasks", "site-3", n_train=8, n_test=4, seed=1, max_input_words=5)
    assert all(len(e.input.split()) <= 5 for e in short.train.examples)
    again = load_instruct_suite_site("instruct-tasks", "site-3", n_train=8, n_test=4, seed=1, max_input_words=5)
    other = load_instruct_suite_site("instruct-tasks", "site-3", n_train=8, n_test=4, seed=2, max_input_words=5)
    assert short.train.examples == again.train.examples != other.train.examples
    with pytest.raises(ValueError, match="unknown instruction suite"):
        load_instruct_suite_site("text-tasks", "site-1")
    with pytest.raises(ValueError, match="unknown site"):
        load_instruct_suite_site("instruct-tasks", "client-1")
    with pytest.raises(ValueError, match="max_input_words"):
        load_instruct_suite_site("instruct-tasks", "site-1", max_input_words=0)
    with pytest.raises(ValueError, match=r"unknown data config keys \['alpha'\]"):
        load_instruct_task_data({"suite": "instruct-tasks", "alpha": 0.1}, "site-1")
