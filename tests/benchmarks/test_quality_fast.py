"""The quality benchmark's command in a tiny configuration: every method runs and writes valid results.

It checks that the benchmark works end to end (results schema, summary, plots), not which method wins.
"""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ALL_METHODS = [
    "probe",
    "local",
    "local-reseeded",
    "fedavg",
    "fedavg-slr",
    "fedamp",
    "fedsa-lora",
    "fedavg-ft",
    "fedbip",
    "fedbip-l",
    "fedbip-cumulative",
    "fedbip-centered",
    "fedbip-cumulative-centered",
    "fedbip-norm-bound",
    "fedbip-checked",
    "fedbip-cumulative-checked",
    "fedbip-partner-check",
    "fedbip-cumulative-partner-check",
    "fedbip-own-check",
    "fedbip-cumulative-own-check",
    "fedbip-sa",
    "fedbip-cumulative-sa",
    "fedbip-centered-sa",
    "oracle-groups",
]
FAST = [
    "--num-clients",
    "2",
    "--num-rounds",
    "1",
    "--max-examples",
    "16",
    "--test-examples",
    "16",
    "--max-length",
    "32",
    "--round-eval-examples",
    "8",
]


def _quality(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", *args], cwd=REPO, capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(scope="module")
def benchmark_dir(tmp_path_factory, minilm_path):
    output = str(tmp_path_factory.mktemp("quality"))
    proc = _quality("--suite", "text-tasks", *FAST, "--methods", "all", "--seeds", "0", "--output", output)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return output


def _is_fraction(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_every_method_runs(benchmark_dir):
    with open(os.path.join(benchmark_dir, "benchmark.json")) as f:
        info = json.load(f)
    assert info["methods"] == ALL_METHODS
    assert info["git_commit"] is None or len(info["git_commit"].split("+")[0]) == 40
    assert {(r["method"], r["seed"], r["status"]) for r in info["runs"]} == {(m, 0, "ok") for m in info["methods"]}


def test_every_method_wrote_valid_results(benchmark_dir):
    with open(os.path.join(benchmark_dir, "benchmark.json")) as f:
        methods = json.load(f)["methods"]
    for method in methods:
        folder = os.path.join(benchmark_dir, method, "seed0")
        with open(os.path.join(folder, "results.json")) as f:
            results = json.load(f)
        assert results["method"] == method and results["num_rounds"] == 1
        assert results["suite"] == "text-tasks" and results["wall_time_s"] > 0
        assert sorted(results["clients"]) == ["site-1", "site-2"], method
        for site, c in results["clients"].items():
            assert {"task", "n_train", "accuracy_before", "accuracy", "adapter_dir"} <= set(c), (method, site)
            assert c["n_train"] == 16 and isinstance(c["task"], str) and c["adapter_dir"]
            assert _is_fraction(c["accuracy_before"]) and _is_fraction(c["accuracy"]), (method, site, c)
            assert [h["round"] for h in c["history"]] == [0], (method, site, c["history"])  # one round, each site
        if not method.startswith("fedavg"):  # NVFlare's FedAvg workflow writes no per-round weight log
            assert os.path.getsize(os.path.join(folder, "rounds.jsonl")) > 0


def test_local_reseeded_is_local_with_another_training_seed_on_the_same_data(benchmark_dir):
    def run(method):
        with open(os.path.join(benchmark_dir, method, "seed0", "results.json")) as f:
            return json.load(f)

    local, reseeded = run("local"), run("local-reseeded")
    assert local["options"]["seed"] == 0 and reseeded["options"]["seed"] == 1000
    assert reseeded["options"]["aggregation"] == local["options"]["aggregation"] == "local"
    # the method's seed is recorded once, as the method's; the data (and its own sampling seed) is Local's
    assert "seed" not in reseeded["configuration"]["recipe"]
    assert reseeded["configuration"]["method_options"] == {"aggregation": "local", "seed": 1000}
    assert reseeded["configuration"]["recipe"]["data"] == local["configuration"]["recipe"]["data"]


def test_summary_and_plots(benchmark_dir):
    with open(os.path.join(benchmark_dir, "benchmark.json")) as f:
        methods = json.load(f)["methods"]
    with open(os.path.join(benchmark_dir, "summary.md")) as f:
        summary = f.read()
    assert "python -m benchmarks.quality --suite text-tasks" in summary
    rows = {line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")}
    assert set(methods) <= rows
    pngs = ["accuracy_by_round.png"] + [f"weights_{m}.png" for m in methods if m.startswith("fedbip")]
    for name in pngs:
        path = os.path.join(benchmark_dir, name)
        assert os.path.exists(path) and os.path.getsize(path) > 1000, name
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_summary_only_rebuilds_the_summary(benchmark_dir):
    os.remove(os.path.join(benchmark_dir, "summary.md"))
    proc = _quality("--output", benchmark_dir, "--summary-only")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert os.path.exists(os.path.join(benchmark_dir, "summary.md"))
    assert "| fedbip |" in proc.stdout


def test_an_unknown_method_is_an_error():
    proc = _quality("--methods", "fedprox", "--output", "/nonexistent/never-written")
    assert proc.returncode == 2 and "unknown method 'fedprox'" in proc.stderr


def test_gaps_to_local_are_paired_by_seed_and_client():
    from benchmarks.summary import accuracy_rows

    def run(accs):
        return {"clients": {f"site-{i + 1}": {"task": "t", "accuracy": a} for i, a in enumerate(accs)}}

    runs = {
        "local": {0: run([0.5, 0.5]), 1: run([0.7, 0.7])},
        "fedbip": {0: run([0.6, 0.4]), 1: run([0.9, 0.7])},
    }
    rows = {row[0]: row for row in accuracy_rows(runs, ["local", "fedbip"])}
    assert rows["local"][1:] == ["60.0 ± 14.1", "60.0 ± 14.1", "60.0 ± 14.1", "-", "-"]
    # seed 0: gaps +10, -10 (mean 0, worst -10); seed 1: gaps +20, 0 (mean +10, worst 0)
    assert rows["fedbip"][3:] == ["65.0 ± 21.2", "+5.0 ± 7.1", "-5.0 ± 7.1"]


def test_partner_weights_split_rows_into_self_partners_and_others(tmp_path):
    from benchmarks.summary import partner_weights

    clients = ["site-1", "site-2", "site-3", "site-4"]
    groups = {"site-1": "a", "site-2": "a", "site-3": "b", "site-4": "b"}
    w = [[0.5, 0.3, 0.2, 0.0], [0.2, 0.4, 0.1, 0.3], [0.0, 0.0, 1.0, 0.0], [0.1, 0.1, 0.2, 0.6]]
    layerwise = {"layer.0.": w, "layer.1.": w}
    folder = tmp_path / "fedbip" / "seed0"
    folder.mkdir(parents=True)
    records = [{"round": 0, "clients": clients, "weights": w}, {"round": 1, "clients": clients, "weights": layerwise}]
    (folder / "rounds.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    runs = {"fedbip": {0: {}}, "local": {0: {}}}

    rows = partner_weights(str(tmp_path), runs, ["local", "fedbip"], groups)

    # self: (.5+.4+1+.6)/4; partners: (.3+.2+0+.2)/4; others: (.2+.4+0+.2)/4; top is a partner for 1 and 4
    # (site-2's top non-self weight .3 goes to site-4, site-3 has no non-self weight).
    expected = ["62.5", "17.5", "20.0", "50.0"]
    assert rows == [["fedbip", 0, *expected], ["fedbip", 1, *expected]]


def test_conflict_weights_measure_both_directions(tmp_path):
    from benchmarks.summary import conflict_weights

    clients = ["site-1", "site-2", "site-3"]
    w = [[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.0, 0.5, 0.5]]
    folder = tmp_path / "fedbip" / "seed0"
    folder.mkdir(parents=True)
    (folder / "rounds.jsonl").write_text(json.dumps({"round": 0, "clients": clients, "weights": w}) + "\n")

    rows = conflict_weights(str(tmp_path), {"fedbip": {0: {}}}, ["fedbip"], ["site-3"])

    assert rows == [["fedbip", 0, "15.0", "50.0"]]  # honest: (.1 + .2) / 2; conflicting: .0 + .5


def _run_ok(tmp_path, suite: str, num_clients: str, *methods: str) -> str:
    """Runs FAST with federated heads on a suite and asserts it succeeded; returns the output folder."""
    args = list(FAST)
    args[args.index("--num-clients") + 1] = num_clients
    output = str(tmp_path / suite)
    proc = _quality("--suite", suite, "--federate-head", *args, "--methods", *methods, "--output", output)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return output


def test_conflict_suite_with_a_shared_federated_head(tmp_path, minilm_path):
    output = _run_ok(tmp_path, "label-skew-conflict", "3", "fedbip")
    with open(os.path.join(output, "fedbip", "seed0", "results.json")) as f:
        results = json.load(f)
    assert results["options"]["federate_head"] is True
    tasks = {site: c["task"] for site, c in results["clients"].items()}
    assert tasks == {"site-1": "20newsgroups", "site-2": "20newsgroups-shifted", "site-3": "20newsgroups-shifted"}
    with open(os.path.join(output, "summary.md")) as f:
        summary = f.read()
    assert "honest clients and the conflicting ones (site-2, site-3)" in summary
    assert "| fedbip | 0 |" in summary


def test_heads_per_label_space_in_text_groups(tmp_path, minilm_path):
    output = _run_ok(tmp_path, "text-groups", "4", "fedbip", "fedamp")
    with open(os.path.join(output, "benchmark.json")) as f:
        info = json.load(f)
    assert info["methods"] == ["fedbip", "fedamp"]
    for method in ("fedbip", "fedamp"):
        with open(os.path.join(output, method, "seed0", "results.json")) as f:
            assert json.load(f)["options"]["federate_head"] is True
    with open(os.path.join(output, "fedbip", "seed0", "rounds.jsonl")) as f:
        record = json.loads(f.readline())
    assert not record["rejected"] and len(record["clients"]) == 4
    assert "## Weight on the same-group partner(s)" in open(os.path.join(output, "summary.md")).read()


def test_heads_per_label_space_leave_out_fedavg():
    args = ["--suite", "text-groups", "--federate-head", "--methods", "fedavg", "fedbip", "--output", "/nonexistent/x"]
    proc = _quality(*args)
    assert proc.returncode == 2 and "fedavg average one head for every client" in proc.stderr


def test_image_size_sets_an_image_suites_data_and_is_refused_elsewhere():
    from benchmarks.quality import RunSpec, same_config

    spec = RunSpec(suite="vision-domains", num_clients=6, num_rounds=1, n_train=4, n_test=4)
    assert spec.data_config()["image_size"] == 32  # the suite's
    bigger = RunSpec(**{**spec.__dict__, "image_size": 64})
    assert bigger.data_config()["image_size"] == 64
    # a folder written before the option existed still matches runs without it, not runs with it
    earlier = {k: v for k, v in spec.__dict__.items() if k != "image_size"}
    assert same_config(earlier, spec.__dict__) and not same_config(earlier, bigger.__dict__)
    proc = _quality("--suite", "text-tasks", "--image-size", "64", "--methods", "local", "--output", "/nonexistent/x")
    assert proc.returncode == 2 and "--image-size is for image suites; text-tasks is a text suite" in proc.stderr
