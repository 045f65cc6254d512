"""The quality benchmark's instruct-tasks suite: a causal LM without a head, so zero-shot stands in for the probe."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.quality import METHODS, SUITES, RunSpec  # noqa: E402


def _quality(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_instruct_suite_runs_the_causal_lm_with_short_generations():
    suite = SUITES["instruct-tasks"]
    spec = RunSpec(suite="instruct-tasks", num_clients=3, num_rounds=1, n_train=8, n_test=4, model=suite.model)
    kwargs = spec.recipe_kwargs("job")
    assert kwargs["data"] == {"suite": "instruct-tasks", "n_train": 8, "n_test": 4, "seed": 0, "max_input_words": 48}
    assert kwargs["max_new_tokens"] == 8 and kwargs["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert spec.groups() == {
        "site-1": "rotten-tomatoes-g0",
        "site-2": "election-tweets-g1",
        "site-3": "bbc-news-g2",
    }
    zero_shot = METHODS["zero-shot"].options(spec)
    assert zero_shot == {"aggregation": "local", "train_lora": False}, "nothing trains: the pre-trained model"


def test_probe_is_skipped_without_a_head_and_zero_shot_without_one_on_text():
    proc = _quality("--suite", "instruct-tasks", "--methods", "probe", "--output", "/nonexistent/never-written")
    assert proc.returncode == 2
    assert "skipping probe: it trains only a classification head" in proc.stderr
    assert "zero-shot is its counterpart" in proc.stderr and "no method left to run" in proc.stderr
    proc = _quality("--suite", "text-tasks", "--methods", "zero-shot", "--output", "/nonexistent/never-written")
    assert proc.returncode == 2 and "skipping zero-shot: it is for models without a head" in proc.stderr
