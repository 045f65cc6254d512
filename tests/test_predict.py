"""Inference with a saved personalized model, on the real all-MiniLM-L6-v2 (no mocks)."""

import csv
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fedbip_nvflare.client import TextSiteTrainer, TrainSettings
from fedbip_nvflare.client.trainer_base import HEAD_FILE, LABELS_FILE
from fedbip_nvflare.data import TextSplit, TextTaskData
from fedbip_nvflare.models import LoraSettings
from fedbip_nvflare.predict import (
    format_predictions,
    load_personalized,
    predict,
    predict_file,
    predict_logits,
    read_inputs,
    write_predictions,
)

LABELS = ["neg", "pos"]
TEXTS = [
    "A wonderful, moving film.",
    "Terrible.",
    "The plot dragged on and on, and the acting was wooden from start to finish.",
    "I would watch it again",
    "Not my cup of tea, but the soundtrack is great.",
]
MAX_LENGTH, BATCH = 32, 2  # batches of 2 mix lengths and exercise the reordering


@pytest.fixture(scope="module")
def trainer(minilm_path):
    data = TextTaskData(
        "toy-sentiment", list(LABELS), TextSplit(["good", "bad"], [1, 0]), TextSplit(["fine", "awful"], [1, 0])
    )
    site = TextSiteTrainer(
        minilm_path, data, LoraSettings(), TrainSettings(max_length=MAX_LENGTH, num_threads=1), device="cpu"
    )
    # Move away from the identity adapter (B = 0) and the seeded initial head, deterministically.
    generator = torch.Generator().manual_seed(1234)
    params = site.get_federated()
    for name, value in params.items():
        if ".lora_B." in name:
            params[name] = torch.randn(value.shape, generator=generator) * 0.1
    site.set_federated(params)
    hidden = site.model.head.in_features
    site.model.load_head_state(
        {"head.weight": torch.randn((2, hidden), generator=generator) * 0.5, "head.bias": torch.tensor([0.3, -0.3])}
    )
    return site


@pytest.fixture(scope="module")
def adapter_dir(trainer, tmp_path_factory):
    return trainer.save_personalized(str(tmp_path_factory.mktemp("personalized") / "site-1"))


@pytest.fixture(scope="module")
def loaded(adapter_dir):
    return load_personalized(adapter_dir, device="cpu")


@pytest.fixture(scope="module")
def expected_logits(trainer):
    return predict_logits(trainer.model, trainer.tokenizer, TEXTS, max_length=MAX_LENGTH, batch_size=BATCH)


def _write_txt(path, texts=TEXTS):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(texts) + "\n  \n")  # blank and whitespace-only lines are skipped
    return str(path)


def _copy(adapter_dir, tmp_path, drop=None):
    target = str(tmp_path / "copy")
    shutil.copytree(adapter_dir, target)
    if drop:
        os.remove(os.path.join(target, drop))
    return target


def test_saved_folder_has_the_documented_layout(adapter_dir, minilm_path):
    for name in ("adapter_config.json", "adapter_model.safetensors", HEAD_FILE, LABELS_FILE):
        assert os.path.isfile(os.path.join(adapter_dir, name)), name
    with open(os.path.join(adapter_dir, LABELS_FILE)) as f:
        info = json.load(f)
    assert info["label_names"] == LABELS and info["base_model"] == minilm_path
    head = load_file(os.path.join(adapter_dir, HEAD_FILE))
    assert sorted(head) == ["head.bias", "head.weight"] and tuple(head["head.weight"].shape) == (2, 384)


def test_loaded_model_reproduces_in_memory_model(loaded, trainer, expected_logits):
    model, tokenizer, label_names = loaded
    assert label_names == LABELS and not model.training
    for name, value in trainer.model.head_state().items():
        assert torch.equal(model.head_state()[name], value), f"{name} was not loaded from {HEAD_FILE}"
    logits = predict_logits(model, tokenizer, TEXTS, max_length=MAX_LENGTH, batch_size=BATCH)
    assert logits.shape == (len(TEXTS), 2)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
    # The adapter is not the identity: without it the same head gives other logits.
    with model.backbone.disable_adapter():
        bare = predict_logits(model, tokenizer, TEXTS, max_length=MAX_LENGTH, batch_size=BATCH)
    assert (bare - logits).abs().max() > 1e-3


def test_predict_logits_do_not_depend_on_batching(loaded, expected_logits):
    model, tokenizer, _ = loaded
    one_batch = predict_logits(model, tokenizer, TEXTS, max_length=MAX_LENGTH, batch_size=len(TEXTS))
    torch.testing.assert_close(one_batch, expected_logits, atol=1e-5, rtol=0)


def test_predict_file_labels_every_input_like_in_memory_model(adapter_dir, expected_logits, tmp_path):
    rows = predict_file(adapter_dir, _write_txt(tmp_path / "in.txt"), max_length=MAX_LENGTH, batch_size=BATCH)
    assert [r["text"] for r in rows] == TEXTS
    assert all(set(r) == {"text", "label", "score"} for r in rows)
    assert all(r["label"] in LABELS and 0.0 < r["score"] <= 1.0 for r in rows)
    probs = torch.softmax(expected_logits, dim=-1)
    assert [r["label"] for r in rows] == [LABELS[i] for i in probs.argmax(dim=-1).tolist()]
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), probs.max(dim=-1).values, atol=1e-5, rtol=0)
    assert all(r["score"] >= 0.5 for r in rows)  # the arg-max of two classes


def test_predict_rejects_wrong_label_count_and_handles_no_texts(loaded):
    model, tokenizer, _ = loaded
    with pytest.raises(ValueError, match="3 label names for a model with 2 classes"):
        predict(model, tokenizer, TEXTS, ["a", "b", "c"])
    assert predict(model, tokenizer, [], LABELS) == []
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        predict(model, tokenizer, TEXTS, LABELS, batch_size=0)


def test_model_argument_overrides_base_model_of_labels_json(adapter_dir, expected_logits, tmp_path):
    moved = _copy(adapter_dir, tmp_path)
    labels_path = os.path.join(moved, LABELS_FILE)
    with open(labels_path) as f:
        info = json.load(f)
    base = info["base_model"]
    info["base_model"] = str(tmp_path / "moved-away-model")
    with open(labels_path, "w") as f:
        json.dump(info, f)
    with pytest.raises(FileNotFoundError, match="moved-away-model"):
        load_personalized(moved)
    model, tokenizer, _ = load_personalized(moved, model=base, device="cpu")
    logits = predict_logits(model, tokenizer, TEXTS, max_length=MAX_LENGTH, batch_size=BATCH)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)

    del info["base_model"]
    with open(labels_path, "w") as f:
        json.dump(info, f)
    with pytest.raises(ValueError, match="names no 'base_model'"):
        load_personalized(moved)


@pytest.mark.parametrize("missing", [LABELS_FILE, HEAD_FILE, "adapter_config.json"])
def test_missing_file_is_named(adapter_dir, tmp_path, missing):
    broken = _copy(adapter_dir, tmp_path, drop=missing)
    with pytest.raises(FileNotFoundError, match=f"has no {missing}.*save_personalized"):
        load_personalized(broken)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_personalized(str(tmp_path / "nowhere"))


def test_head_that_does_not_fit_label_names_is_rejected(adapter_dir, tmp_path):
    broken = _copy(adapter_dir, tmp_path)
    with open(os.path.join(adapter_dir, LABELS_FILE)) as f:
        base = json.load(f)["base_model"]
    with open(os.path.join(broken, LABELS_FILE), "w") as f:
        json.dump({"label_names": ["a", "b", "c"], "base_model": base}, f)
    with pytest.raises(ValueError, match=r"head\.safetensors holds .*expected"):
        load_personalized(broken, device="cpu")
    with open(os.path.join(broken, LABELS_FILE), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_personalized(broken)


def test_read_inputs_txt_csv_tsv_jsonl_json(tmp_path):
    assert read_inputs(_write_txt(tmp_path / "a.txt")) == TEXTS

    texts = ["plain", "with, comma", 'with "quotes"', ""]  # a CSV row is kept even with an empty text
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "Text", "label"])
        writer.writerows([[i, t, "pos"] for i, t in enumerate(texts)])
    assert read_inputs(str(tmp_path / "a.csv")) == texts

    with open(tmp_path / "a.tsv", "w", encoding="utf-8") as f:
        f.write("TEXT\n" + "\n".join(["first", "second"]) + "\n")
    assert read_inputs(str(tmp_path / "a.tsv")) == ["first", "second"]

    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": "héllo", "label": "neg"}) + "\n\n" + json.dumps({"text": 42}) + "\n")
    assert read_inputs(str(tmp_path / "a.jsonl")) == ["héllo", "42"]

    with open(tmp_path / "a.json", "w", encoding="utf-8") as f:
        json.dump([{"text": "x"}, {"text": "y", "label": "pos"}], f)
    assert read_inputs(str(tmp_path / "a.json")) == ["x", "y"]


def test_read_inputs_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="input file not found"):
        read_inputs(str(tmp_path / "missing.txt"))
    (tmp_path / "a.parquet").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported input extension '\.parquet'.*\.txt"):
        read_inputs(str(tmp_path / "a.parquet"))
    (tmp_path / "b.csv").write_text("sentence,label\nhi,pos\n")
    with pytest.raises(ValueError, match=r"missing column 'text'.*sentence"):
        read_inputs(str(tmp_path / "b.csv"))
    (tmp_path / "c.jsonl").write_text('{"sentence": "hi"}\n')
    with pytest.raises(ValueError, match="line 1: expected an object with a 'text' key"):
        read_inputs(str(tmp_path / "c.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"text": "hi"}\n{broken\n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_inputs(str(tmp_path / "d.jsonl"))
    (tmp_path / "e.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no texts"):
        read_inputs(str(tmp_path / "e.txt"))
    (tmp_path / "f.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match="no texts"):
        read_inputs(str(tmp_path / "f.csv"))


ROWS = [
    {"text": 'good, "quoted"\nsecond line', "label": "pos", "score": 0.9876543210123},
    {"text": "ünïcode", "label": "neg", "score": 0.5},
]


def test_write_predictions_round_trips_jsonl_and_csv(tmp_path):
    path = write_predictions(ROWS, str(tmp_path / "out" / "pred.jsonl"))
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == ROWS

    path = write_predictions(ROWS, str(tmp_path / "pred.csv"))
    with open(path, newline="", encoding="utf-8") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == ["text", "label", "score"]
    assert [{**r, "score": float(r["score"])} for r in back] == ROWS

    with pytest.raises(ValueError, match=r"unsupported output extension '\.txt'.*\.jsonl, \.csv"):
        write_predictions(ROWS, str(tmp_path / "pred.txt"))


def test_format_predictions_table():
    rows = ROWS + [{"text": "x" * 200, "label": "a-long-label", "score": 1.0}]
    lines = format_predictions(rows).split("\n")
    assert len(lines) == 4 and lines[0].split() == ["label", "score", "text"]
    assert lines[1].split()[:2] == ["pos", "0.988"] and "second line" in lines[1]
    assert lines[2].split() == ["neg", "0.500", "ünïcode"]
    assert lines[3].endswith("x" * 77 + "...") and len(lines[3].split()[2]) == 80
    width = len("a-long-label")  # the label column fits the longest label; scores line up after it
    assert [line[width + 2 : width + 7] for line in lines] == ["score", "0.988", "0.500", "1.000"]
    assert format_predictions([]) == "label  score  text"


def test_written_predictions_of_a_real_run(adapter_dir, loaded, tmp_path):
    model, tokenizer, names = loaded
    rows = predict(model, tokenizer, TEXTS[:2], names, max_length=MAX_LENGTH)
    path = write_predictions(rows, str(tmp_path / "p.jsonl"))
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == rows
    assert format_predictions(rows).count("\n") == 2


def test_fedbip_predict_command(adapter_dir, tmp_path, capsys):
    from fedbip_nvflare.cli import main

    inputs = _write_txt(tmp_path / "texts.txt")
    output = str(tmp_path / "predictions.jsonl")
    assert main(["predict", "--adapter", adapter_dir, "--input", str(inputs), "--output", output]) == 0
    printed = capsys.readouterr().out
    with open(output) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == len(TEXTS) and all(r["label"] in ("neg", "pos") and r["label"] in printed for r in rows)
    assert main(["predict", "--adapter", str(tmp_path / "missing"), "--input", str(inputs)]) == 1
    assert "missing" in capsys.readouterr().out
