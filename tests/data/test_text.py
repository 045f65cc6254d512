"""Tests for loading a site's own text files (fedbip_nvflare.data.text)."""

import json

import pytest

from fedbip_nvflare.data import TextTaskData, load_site_data, load_text_file


def _write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows), encoding="utf-8")
    return str(path)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), encoding="utf-8")
    return str(path)


ROWS = [(f"example number {i}, about {'cats' if i % 3 else 'dogs'}", "cat" if i % 3 else "dog") for i in range(30)]


def test_load_csv_and_jsonl_agree(tmp_path):
    csv_texts, csv_labels = load_text_file(_write_csv(tmp_path / "a.csv", ROWS))
    json_texts, json_labels = load_text_file(_write_jsonl(tmp_path / "a.jsonl", ROWS))
    assert csv_texts == json_texts == [t for t, _ in ROWS]
    assert csv_labels == json_labels == [lab for _, lab in ROWS]


def test_tsv_json_array_and_numeric_labels(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("Label\tText\n1\thello world\n0\tbye\n", encoding="utf-8")
    assert load_text_file(str(tsv)) == (["hello world", "bye"], ["1", "0"])
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"text": "x", "label": 1}, {"text": "y", "label": 0}]), encoding="utf-8")
    assert load_text_file(str(arr)) == (["x", "y"], ["1", "0"])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_text_file(str(tmp_path / "nope.csv"))


def test_missing_column(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", ROWS, header="text,category")
    with pytest.raises(ValueError, match=r"bad\.csv.*label"):
        load_text_file(path)


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2"):
        load_text_file(str(path))
    path.write_text('{"text": "a", "label": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2"):
        load_text_file(str(path))


def test_unsupported_extension(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported extension"):
        load_text_file(str(path))


def test_site_data_with_test_file(tmp_path):
    data = load_site_data(_write_csv(tmp_path / "train.csv", ROWS), _write_jsonl(tmp_path / "test.jsonl", ROWS[:5]))
    assert isinstance(data, TextTaskData)
    assert data.task == "train"
    assert data.label_names == ["cat", "dog"]
    assert len(data.train) == 30 and data.test.texts == [t for t, _ in ROWS[:5]]
    assert data.test.labels == [data.label_names.index(lab) for _, lab in ROWS[:5]]


def test_unknown_test_label(tmp_path):
    train = _write_csv(tmp_path / "train.csv", ROWS)
    test = _write_csv(tmp_path / "test.csv", [("a bird", "bird"), ("a cat", "cat")])
    with pytest.raises(ValueError, match="bird"):
        load_site_data(train, test)


def test_split_is_deterministic_disjoint_and_stratified(tmp_path):
    train = _write_csv(tmp_path / "train.csv", ROWS)
    a = load_site_data(train, task="pets", test_fraction=0.2, seed=1)
    assert a == load_site_data(train, task="pets", test_fraction=0.2, seed=1)
    assert a.task == "pets"
    assert len(a.train) + len(a.test) == 30 and not set(a.train.texts) & set(a.test.texts)
    assert sorted(a.test.labels) == [0] * 4 + [1] * 2  # 20 cats, 10 dogs
    assert load_site_data(train, seed=2).test.texts != a.test.texts
    with pytest.raises(ValueError, match="test_fraction"):
        load_site_data(train, test_fraction=1.0)


def test_max_train_max_test(tmp_path):
    train = _write_csv(tmp_path / "train.csv", ROWS)
    a = load_site_data(train, max_train=7, max_test=3, seed=3)
    assert (len(a.train), len(a.test)) == (7, 3)
    assert a == load_site_data(train, max_train=7, max_test=3, seed=3)
