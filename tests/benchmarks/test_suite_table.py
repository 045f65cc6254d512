"""The all-suites table is computed from the benchmark folders' results (means, paired Δ against Local, gaps)."""

import json

from benchmarks.suite_table import BEGIN, END, main, suite_table

# method -> accuracy of the two clients at seed 0 (seed 1: + 0.1 for local, + 0.2 for the others)
ACCURACY = {"local": (0.6, 0.8), "fedbip": (0.7, 0.8), "fedsa-lora": (0.5, 0.7)}


def _folder(tmp_path, suite, modality="text"):
    out = tmp_path / suite
    runs = []
    for method, scores in ACCURACY.items():
        for seed in (0, 1):
            shift = 0.1 * seed if method == "local" else 0.2 * seed
            clients = {f"site-{k + 1}": {"accuracy": a + shift} for k, a in enumerate(scores)}
            folder = out / method / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps({"method": method, "clients": clients}))
            runs.append({"method": method, "seed": seed, "status": "ok"})
    spec = {"suite": suite, "modality": modality}
    (out / "benchmark.json").write_text(json.dumps({"spec": spec, "methods": list(ACCURACY), "runs": runs}))
    return str(out)


def test_means_paired_deltas_and_missing_methods(tmp_path):
    table = suite_table([_folder(tmp_path, "text-groups"), _folder(tmp_path, "instruct-tasks", "causal-lm")])
    rows = [line for line in table.splitlines() if line.startswith("| [")]
    # local 70 / 80; fedbip 75 / 95 (Δ +5 / +15); fedsa-lora 60 / 80 (Δ -10 / +0)
    assert rows[0] == (
        "| [text-groups](text-groups/summary.md) (2 seeds, accuracy) | 75.0 ± 7.1 | – | – | 70.0 ± 14.1 (-5.0 ± 7.1) "
        "| – | 85.0 ± 14.1 (+10.0 ± 7.1) | – | – | – | – |"
    )
    assert rows[1].startswith("| [instruct-tasks](instruct-tasks/summary.md) (2 seeds, exact match) |")


def test_main_writes_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    assert main([_folder(tmp_path, "text-tasks"), "--write", str(readme), "--link-prefix", "r/"]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith(f"{END}\nrest\n")
    assert "| [text-tasks](r/text-tasks/summary.md) (2 seeds, accuracy) | 75.0 ± 7.1 |" in text
    assert main([str(tmp_path / "nothing-here")]) == 2
