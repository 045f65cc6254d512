"""The quality summary's metric names: exact match and a ROUGE-L table for generated answers, accuracy otherwise."""

import json

from benchmarks.summary import write_summary


def _benchmark(tmp_path, modality, clients_of):
    runs = []
    for method in ("local", "fedbip"):
        for seed in (0, 1):
            folder = tmp_path / method / f"seed{seed}"
            folder.mkdir(parents=True)
            results = {"method": method, "num_rounds": 1, "clients": clients_of(method, seed)}
            (folder / "results.json").write_text(json.dumps(results))
            runs.append({"method": method, "seed": seed, "status": "ok", "wall_time_s": 1.0, "error": None})
    spec = {"suite": "s", "modality": modality}
    info = {"command": "cmd", "spec": spec, "methods": ["local", "fedbip"], "runs": runs}
    (tmp_path / "benchmark.json").write_text(json.dumps(info))
    write_summary(str(tmp_path))
    return (tmp_path / "summary.md").read_text()


def test_generated_answers_get_exact_match_and_rouge_tables(tmp_path):
    def clients(method, seed):
        em = 0.5 if method == "local" else 0.75
        return {"site-1": {"task": "t", "accuracy": em, "rouge_l": em - 0.25 + 0.1 * seed, "history": []}}

    summary = _benchmark(tmp_path, "causal-lm", clients)
    assert "## Final exact match (%)" in summary and "## Mean exact match over clients by round" in summary
    assert "![Mean exact match over clients by round]" in summary
    rouge = summary.split("## Final ROUGE-L F1 (%)")[1].split("##")[0]
    assert "| local | 30.0 ± 7.1 | 30.0 ± 7.1 | - | - |" in rouge  # rouge 0.25 and 0.35 over the two seeds
    assert "| fedbip | 55.0 ± 7.1 | 55.0 ± 7.1 | +25.0 ± 0.0 | +25.0 ± 0.0 |" in rouge


def test_classifiers_keep_accuracy_and_have_no_rouge_table(tmp_path):
    summary = _benchmark(tmp_path, "text", lambda m, s: {"site-1": {"task": "t", "accuracy": 0.6, "history": []}})
    assert "## Final accuracy (%)" in summary and "ROUGE-L" not in summary
