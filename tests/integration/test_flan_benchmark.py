"""The flan-pairs suite end to end on a directory the project never saw: the benchmark runner, NVFlare's simulator,
the causal LM and ROUGE scoring, with the directory's categories as the oracle's groups."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_flan_pairs_benchmark_on_a_new_directory(tmp_path):
    data = tmp_path / "my-flan"
    for category, task, answers in (("mood", "reviews", ["good", "bad"]), ("mood", "tweets", ["good", "bad"])):
        records = [
            {
                "instruction": f"Is this {task[:-1]} good or bad? Item {i}.\nOPTIONS:\n- good\n- bad",
                "output": answers[i % 2],
            }
            for i in range(12)
        ]
        _write(data / category / f"{task}_train.jsonl", records[:8])
        _write(data / category / f"{task}_test.jsonl", records[8:])
    out = tmp_path / "out"
    args = ["--suite", "flan-pairs", "--data-dir", str(data), "--methods", "fedbip", "--num-clients", "2"]
    args += ["--num-rounds", "1", "--max-examples", "4", "--test-examples", "2", "--max-new-tokens", "4"]
    args += ["--max-length", "64", "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", *args], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((out / "benchmark.json").read_text())
    assert info["groups"] == {"site-1": "mood", "site-2": "mood"}
    assert info["data"]["data_dir"] == str(data) and info["machine"]["cpus"] >= 1
    results = json.loads((out / "fedbip" / "seed0" / "results.json").read_text())
    assert {c["task"] for c in results["clients"].values()} == {"reviews", "tweets"}
    for client in results["clients"].values():
        assert 0.0 <= client["rouge1"] <= 1.0 and 0.0 <= client["rouge_lsum"] <= 1.0
    assert results["command"].startswith("python -m benchmarks.quality --suite flan-pairs")
    assert results["configuration"]["recipe"]["data"]["suite"] == "flan-pairs"
    summary = (out / "summary.md").read_text()
    assert "## Mean over tasks (%)" in summary and "## Final ROUGE-1 F1 (%)" in summary
