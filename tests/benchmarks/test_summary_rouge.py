"""The quality summary of ROUGE-scored suites (flan-8, flan-pairs): the mean-over-tasks table with paired gaps to
Local and FedAMP, and per-task ROUGE-1 / ROUGE-Lsum tables."""

import json

import pytest

from benchmarks.summary import write_summary

SCORES = {  # method -> (rouge1, rouge_lsum, exact match) of site-1 and site-2, seed 0; seed 1 adds 0.1 to rouge1
    "local": ((0.5, 0.4, 0.3), (0.7, 0.6, 0.5)),
    "fedamp": ((0.4, 0.4, 0.2), (0.6, 0.6, 0.4)),
    "fedbip": ((0.6, 0.5, 0.4), (0.5, 0.6, 0.5)),
}


def test_mean_over_tasks_table_has_paired_gaps(tmp_path):
    runs = []
    for method, sites in SCORES.items():
        for seed in (0, 1):
            clients = {
                f"site-{k + 1}": {
                    "task": f"t{k}",
                    "rouge1": r1 + 0.1 * seed,
                    "rouge_lsum": rl,
                    "rouge_l": rl,
                    "accuracy": em,
                    "history": [],
                }
                for k, (r1, rl, em) in enumerate(sites)
            }
            folder = tmp_path / method / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps({"method": method, "num_rounds": 1, "clients": clients}))
            runs.append({"method": method, "seed": seed, "status": "ok", "wall_time_s": 1.0, "error": None})
    info = {"command": "cmd", "spec": {"suite": "flan-8", "modality": "causal-lm"}, "methods": list(SCORES)}
    (tmp_path / "benchmark.json").write_text(json.dumps({**info, "runs": runs}))
    write_summary(str(tmp_path))
    summary = (tmp_path / "summary.md").read_text()
    table = summary.split("## Mean over tasks (%)")[1].split("##")[0]
    assert "| method | ROUGE-1 | ROUGE-Lsum | exact match | Δ ROUGE-1 vs local | Δ ROUGE-1 vs fedamp |" in table
    # local rouge1: mean(0.5, 0.7) = 60.0 at seed 0, 70.0 at seed 1; fedbip: 55.0 / 65.0, so -5.0 vs local
    # (paired), +5.0 vs fedamp (50.0 / 60.0); worst client vs local: site-2, 0.5 - 0.7 = -20.0.
    assert "| local | 65.0 ± 7.1 | 50.0 ± 0.0 | 40.0 ± 0.0 | - | +10.0 ± 0.0 | - | +0.0 ± 0.0 | - |" in table
    assert (
        "| fedbip | 60.0 ± 7.1 | 55.0 ± 0.0 | 45.0 ± 0.0 | -5.0 ± 0.0 | +5.0 ± 0.0 | +5.0 ± 0.0 | +5.0 ± 0.0 "
        "| -20.0 ± 0.0 |" in table
    )
    for title in ("ROUGE-1 F1", "ROUGE-Lsum F1", "ROUGE-L F1"):
        assert f"## Final {title} (%)" in summary


def test_invocations_of_a_campaign_are_merged_and_listed(tmp_path):
    from benchmarks.quality import merge_invocations
    from benchmarks.summary import invocation_lines

    base = {"spec": {"suite": "flan-8"}, "data": {"suite": "flan-8"}, "machine": {}, "groups": {}}
    first = merge_invocations(
        str(tmp_path), {**base, "command": "a", "git_commit": "c1", "methods": ["local"], "seeds": [1]}
    )
    first["runs"] = [{"method": "local", "seed": 1, "status": "ok"}]
    first["invocations"][-1]["wall_time_s"] = 10.0
    (tmp_path / "benchmark.json").write_text(json.dumps(first))
    second = merge_invocations(
        str(tmp_path), {**base, "command": "b", "git_commit": "c2", "methods": ["fedbip"], "seeds": [2]}
    )
    assert second["runs"] == first["runs"], "earlier runs are kept"
    assert second["methods"] == ["local", "fedbip"] and second["seeds"] == [1, 2]
    assert [i["command"] for i in second["invocations"]] == ["a", "b"]
    lines = invocation_lines(second)
    assert "**Runs from 2 different commits: c1, c2.**" in lines
    with pytest.raises(ValueError, match="another spec"):
        merge_invocations(
            str(tmp_path),
            {**base, "spec": {"suite": "x"}, "command": "c", "git_commit": "c3", "methods": [], "seeds": []},
        )


def test_an_option_added_since_with_its_empty_default_is_the_same_config():
    from benchmarks.quality import same_config

    earlier = {"suite": "vision-domains", "num_rounds": 3}
    assert same_config(earlier, {**earlier, "data_dir": None, "settings": {}})
    assert not same_config(earlier, {**earlier, "data_dir": "/data"})  # set to something: another configuration
    assert not same_config(earlier, {"suite": "vision-domains", "num_rounds": 4})
    assert not same_config({**earlier, "data_dir": None}, earlier)  # the current run lacks a key the earlier has
    assert not same_config(None, earlier)
    assert same_config(earlier, {**earlier, "modality": "text"}, {"modality": "text"})  # added at its default
    assert not same_config(earlier, {**earlier, "modality": "vision"}, {"modality": "text"})


def test_settings_none_is_the_suites_settings_when_merging(tmp_path):
    from benchmarks.quality import SUITES, merge_invocations, resolved_spec

    suite_settings = dict(SUITES["instruct-tasks"].settings)
    assert suite_settings, "the instruct suite has settings of its own"
    earlier = {"suite": "instruct-tasks", "num_rounds": 3, "settings": None}
    now = {**earlier, "settings": suite_settings}
    assert resolved_spec(earlier) == now and resolved_spec(now) == now
    base = {"command": "c", "git_commit": "c1", "machine": {}, "data": {"suite": "instruct-tasks"}}
    with open(tmp_path / "benchmark.json", "w") as f:
        json.dump({**base, "spec": earlier, "methods": ["local"], "seeds": [0], "runs": []}, f)
    merged = merge_invocations(str(tmp_path), {**base, "spec": now, "git_commit": "c2", "methods": ["x"], "seeds": [1]})
    assert merged["methods"] == ["local", "x"] and merged["seeds"] == [0, 1]
    with pytest.raises(ValueError, match="another spec"):
        merge_invocations(
            str(tmp_path), {**base, "spec": {**now, "settings": {"batch_size": 4}}, "methods": [], "seeds": []}
        )
