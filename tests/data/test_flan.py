"""Federated Flan data: Flan records as site data, the flan-8 (FedDPA) and flan-pairs (FedOA) directory layouts."""

import json

import pytest

from fedbip_nvflare.data.flan import flan_suite_groups, flan_tasks, load_flan_suite_site, shorten_instruction
from fedbip_nvflare.data.instruct import load_instruct_files, read_instruct_file
from fedbip_nvflare.data.site_data import load_instruct_task_data

LABELS = {"sst2": ["positive", "negative"], "snli": ["yes", "no", "it is not possible to tell"], "qa": None}


def _records(task, n, category="c"):
    answers = LABELS.get(task)
    return [
        {
            "instruction": f"{task} question {i}?\nOPTIONS:\n- a\n- b",
            "output": answers[i % len(answers)] if answers else f"free answer number {i}",
            "task": task,
            "category": category,
        }
        for i in range(n)
    ]


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture()
def flan8(tmp_path):
    root = tmp_path / "ds1"
    root.mkdir()
    test = []
    for k, task in enumerate(["sst2", "snli", "qa"]):
        (root / f"local_training_{k}.json").write_text(json.dumps(_records(task, 30)))
        test += _records(task, 12)
    _jsonl(root / "test.jsonl", test)
    return str(root)


@pytest.fixture()
def pairs(tmp_path):
    root = tmp_path / "pairs"
    for category, tasks in {"sentiment": ["sst2", "imdb"], "entailment": ["snli", "anli"]}.items():
        for task in tasks:
            _jsonl(root / category / f"{task}_train.jsonl", _records("sst2", 20, "ignored"))
            _jsonl(root / category / f"{task}_test.jsonl", _records("sst2", 10, "ignored"))
    return str(root)


def test_flan8_one_task_per_client_and_the_test_file_split_by_task(flan8):
    tasks = flan_tasks("flan-8", flan8)
    assert [t.task for t in tasks] == ["sst2", "snli", "qa"]
    site = load_flan_suite_site("flan-8", "site-2", n_train=8, n_test=5, seed=3, data_dir=flan8)
    assert site.task == "snli" and len(site.train) == 8 and len(site.test) == 5
    assert all(e.task == "snli" for e in site.train.examples + site.test.examples)
    assert site.label_names == sorted(LABELS["snli"]), "few distinct outputs: a labelled task"
    qa = load_flan_suite_site("flan-8", "site-3", n_train=8, n_test=5, seed=3, data_dir=flan8)
    assert qa.label_names == [], "free-text outputs have no label set"
    again = load_flan_suite_site("flan-8", "site-2", n_train=8, n_test=5, seed=3, data_dir=flan8)
    assert again == site, "same seed, same data"
    other = load_flan_suite_site("flan-8", "site-2", n_train=8, n_test=5, seed=4, data_dir=flan8)
    assert other.train != site.train
    assert flan_suite_groups("flan-8", 3, flan8) == {"site-1": "sst2", "site-2": "snli", "site-3": "qa"}


def test_flan8_errors_name_the_fix(flan8, tmp_path):
    with pytest.raises(ValueError, match="holds 3 tasks.*site-1..site-3"):
        load_flan_suite_site("flan-8", "site-4", data_dir=flan8)
    with pytest.raises(ValueError, match="set 'data_dir'"):
        load_flan_suite_site("flan-8", "site-1")
    with pytest.raises(FileNotFoundError, match="no local_training_<k>.json"):
        flan_tasks("flan-8", str(tmp_path))
    with pytest.raises(ValueError, match="num_clients must be an int in 1..3"):
        flan_suite_groups("flan-8", 4, flan8)


def test_pairs_groups_are_categories_and_tasks_are_file_stems(pairs):
    assert flan_suite_groups("flan-pairs", 4, pairs) == {
        "site-1": "entailment",
        "site-2": "entailment",
        "site-3": "sentiment",
        "site-4": "sentiment",
    }
    data = load_instruct_task_data(
        {"suite": "flan-pairs", "data_dir": pairs, "n_train": 6, "n_test": 4, "seed": 0}, "site-2"
    )
    assert data.task == "snli" and len(data.train) == 6 and len(data.test) == 4


def test_long_instructions_keep_both_ends():
    text = "Passage: " + " ".join(f"w{i}" for i in range(300)) + "\nQuestion: who?\nOPTIONS:\n- a\n- b"
    short = shorten_instruction(text, 20)
    assert short.startswith("Passage: w0 w1") and short.endswith("Question: who?\nOPTIONS:\n- a\n- b")
    assert " ... " in short and len(short.split()) == 21, "20 words and the ellipsis"
    assert shorten_instruction("short text", 20) == "short text"


def test_bad_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    _jsonl(path, [{"instruction": "a", "output": "b"}, {"instruction": "c", "task": "t"}])
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: missing field\(s\) \['output'\]"):
        read_instruct_file(str(path))


def test_site_files_with_several_tasks_are_split_by_task(tmp_path):
    _jsonl(tmp_path / "train.jsonl", _records("snli", 10))
    _jsonl(tmp_path / "test.jsonl", _records("sst2", 6) + _records("snli", 4))
    data = load_instruct_files(str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"))
    assert data.task == "snli", "the training records name the task"
    assert len(data.test) == 4 and all(e.task == "snli" for e in data.test.examples)
    with pytest.raises(ValueError, match=r"train.jsonl: no record with task 'qa'; the file's tasks are \['snli'\]"):
        load_instruct_files(str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"), task="qa")
    _jsonl(tmp_path / "others.jsonl", _records("sst2", 6) + _records("qa", 6))
    with pytest.raises(
        ValueError, match=r"others.jsonl: no record with task 'snli'; the file's tasks are \['qa', 'sst2'\]"
    ):
        load_instruct_files(str(tmp_path / "train.jsonl"), str(tmp_path / "others.jsonl"))


def test_unicode_line_separators_inside_records_are_kept(tmp_path):
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"instruction": "one\u2028two", "output": "x"}, ensure_ascii=False) + "\n")
    assert read_instruct_file(str(path))[0].instruction == "one\u2028two"
