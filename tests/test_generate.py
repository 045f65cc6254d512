"""fedbip predict for causal LMs: a saved personalized SmolLM2 answers like the site's trainer did."""

import json

import pytest

from fedbip_nvflare.cli import main
from fedbip_nvflare.client.causal_lm import GENERATION_FILE, CausalLMSiteTrainer, score_responses
from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.data.instruct import InstructExample, InstructSplit, InstructTaskData
from fedbip_nvflare.generate import format_responses, generate_file, load_personalized_lm
from fedbip_nvflare.models.causal_lm import DEFAULT_CAUSAL_LM, DEFAULT_CAUSAL_LM_TARGETS
from fedbip_nvflare.models.lora import LoraSettings

QUESTION = "Which topic is this headline about? Answer with one of: sport, business."
HEADLINES = [
    ("Striker scores twice as City win the derby", "sport"),
    ("Shares fall after the bank cuts its profit forecast", "business"),
    ("Champion retires after her tenth title", "sport"),
    ("Retailer buys rival in a two billion deal", "business"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trainer after one epoch on four headlines, its personalized folder, and its test records."""
    from fedbip_nvflare import assets

    if assets.model_path(DEFAULT_CAUSAL_LM) is None:
        pytest.fail("offline SmolLM2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    examples = [InstructExample(QUESTION, answer, text) for text, answer in HEADLINES]
    data = InstructTaskData("topic", InstructSplit(examples), InstructSplit(examples), ["business", "sport"])
    settings = TrainSettings(
        batch_size=2, max_length=64, num_threads=1, max_new_tokens=4, eval_batch_size=2, learning_rate=5e-3
    )
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=DEFAULT_CAUSAL_LM_TARGETS)
    trainer = CausalLMSiteTrainer(DEFAULT_CAUSAL_LM, data, lora, settings, device="cpu")
    trainer.train(epochs=1, round_index=0)
    trainer.evaluate()
    folder = trainer.save_personalized(str(tmp_path_factory.mktemp("site") / "personalized_adapter"))
    records = tmp_path_factory.mktemp("inputs") / "questions.jsonl"
    records.write_text(
        "\n".join(json.dumps({"instruction": QUESTION, "input": t, "output": a}) for t, a in HEADLINES) + "\n"
    )
    return trainer, folder, records


def test_saved_model_answers_what_the_site_generated(trained):
    trainer, folder, records = trained
    rows, scores = generate_file(folder, str(records), batch_size=2)
    assert [r["response"] for r in rows] == [trainer.predictions[i] for i in range(len(HEADLINES))]
    assert [(r["input"], r["output"]) for r in rows] == HEADLINES
    with open(f"{folder}/{GENERATION_FILE}") as f:
        last = json.load(f)["last_evaluation"]
    assert scores == pytest.approx({k: last[k] for k in ("exact_match", "rouge_l", "rouge1", "rouge2", "rouge_lsum")})
    assert "exact match" in format_responses(rows, scores)


def test_the_trained_adapter_is_loaded_onto_the_base_model(trained):
    _, folder, _ = trained
    model, _, info = load_personalized_lm(folder)
    assert info["base_model"] == DEFAULT_CAUSAL_LM
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b), "the trained adapter is loaded, not a fresh one"


def test_cli_answers_without_references_and_writes_jsonl(trained, tmp_path, capsys):
    _, folder, _ = trained
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"instruction": QUESTION, "input": HEADLINES[0][0]}) + "\n")
    out = tmp_path / "answers.jsonl"
    assert main(["predict", "--adapter", folder, "--input", str(questions), "--output", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(row) == {"instruction", "input", "response"} and row["input"] == HEADLINES[0][0]
    assert "exact match" not in capsys.readouterr().out, "no references, no scores"


def test_bad_inputs_are_named(trained, tmp_path, capsys):
    _, folder, _ = trained
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "no instruction"}) + "\n")
    assert main(["predict", "--adapter", folder, "--input", str(bad)]) == 1
    assert "line 1" in capsys.readouterr().out
    assert main(["predict", "--adapter", folder, "--input", str(bad), "--output", str(tmp_path / "x.txt")]) == 1
    assert ".jsonl" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=GENERATION_FILE):
        load_personalized_lm(str(tmp_path))
    with pytest.raises(ValueError, match="precision"):
        load_personalized_lm(folder, precision="int8")


def test_score_responses():
    scores = score_responses(["Sport\nmore", "business"], ["sport", "sport"])
    assert scores["exact_match"] == 0.5 and 0.0 < scores["rouge_l"] < 1.0
    with pytest.raises(ValueError, match="2 references"):
        score_responses(["a"], ["a", "b"])
