"""The end-to-end benchmark in a tiny configuration: both methods run every round and every payload is measured.

It checks what the benchmark records (rounds, bytes per client and round, the report), never how fast anything is.
"""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLIENTS = ["site-1", "site-2"]
ROUNDS = 2
TINY = [
    "--num-clients",
    str(len(CLIENTS)),
    "--num-rounds",
    str(ROUNDS),
    "--max-examples",
    "16",
    "--test-examples",
    "16",
    "--round-eval-examples",
    "8",
    "--max-length",
    "32",
    "--repeats",
    "1",
]
BYTES_TOLERANCE = 0.01  # FedBip and FedAvg payloads: the same adapter, different meta of a few hundred bytes


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory, minilm_path):
    output = tmp_path_factory.mktemp("end_to_end")
    workspace = tmp_path_factory.mktemp("e2e_workspace")
    args = [*TINY, "--output", str(output), "--workspace", str(workspace)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.end_to_end", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    with open(output / "end_to_end.json") as f:
        info = json.load(f)
    return {"info": info, "output": output, "stdout": proc.stdout, "workspace": workspace}


@pytest.fixture(scope="module")
def adapter_raw_bytes(minilm_path) -> int:
    from fedbip_nvflare.models import LoraSettings, initial_adapter

    return sum(t.numel() * t.element_size() for t in initial_adapter(minilm_path, LoraSettings(), seed=0).values())


def _train_payloads(run):
    return {(p["round"], p["site"], p["direction"]): p for p in run["payloads"] if p["task"] == "train"}


def test_both_methods_ran_every_round(benchmark):
    info = benchmark["info"]
    runs = info["runs"]
    assert [(r["method"], r["repeat"], r["status"]) for r in runs] == [("fedbip", 0, "ok"), ("fedavg", 0, "ok")]
    for run in runs:
        assert [r["round"] for r in run["rounds"]] == list(range(ROUNDS)), run["method"]
        for r in run["rounds"]:
            assert r["results"] == len(CLIENTS), (run["method"], r)
            assert math.isfinite(r["seconds"]) and r["seconds"] >= 0
            assert r["last_result_s"] is not None and r["client_task_s_max"] is not None
        assert 0.0 <= run["mean_accuracy"] <= 1.0
    fedbip, fedavg = runs
    assert all(r["aggregation_s"] is not None and r["aggregation_s"] >= 0 for r in fedbip["rounds"])
    assert all(r["aggregation_s"] is None for r in fedavg["rounds"])  # NVFlare's FedAvg writes no rounds.jsonl
    assert info["settings"]["num_clients"] == len(CLIENTS) and info["settings"]["repeats"] == 1
    env = info["environment"]
    assert env["cpu_count"] >= 1 and env["torch"]
    assert info["git_commit"] is None or len(info["git_commit"].split("+")[0]) == 40
    assert info["machine"]["cpus"] >= 1


def test_bytes_recorded_for_every_client_and_round(benchmark, adapter_raw_bytes):
    for run in benchmark["info"]["runs"]:
        payloads = _train_payloads(run)
        expected = {(r, s, d) for r in range(ROUNDS) for s in CLIENTS for d in ("in", "out")}
        assert set(payloads) == expected, run["method"]
        for key, p in payloads.items():
            assert p["tensors"] > 0 and p["raw_bytes"] == adapter_raw_bytes, (run["method"], key, p)
            assert p["bytes"] > adapter_raw_bytes, (run["method"], key, p)
            assert p["data_bytes"] + p["meta_bytes"] + p["header_bytes"] <= p["bytes"]
        validate = {(p["site"], p["direction"]) for p in run["payloads"] if p["task"] == "validate"}
        assert validate == {(s, d) for s in CLIENTS for d in ("in", "out")}
        site_logs = sorted(os.listdir(benchmark["output"] / "runs" / f"{run['method']}-0"))
        assert [f"{s}_payload_bytes.jsonl" for s in CLIENTS] == [n for n in site_logs if n.endswith("bytes.jsonl")]


def test_fedbip_and_fedavg_move_the_same_bytes(benchmark):
    fedbip, fedavg = (_train_payloads(run) for run in benchmark["info"]["runs"])
    assert set(fedbip) == set(fedavg)
    for key in fedbip:
        a, b = fedbip[key], fedavg[key]
        assert a["data_bytes"] == b["data_bytes"], key  # one FULL adapter each way, same names and shapes
        assert abs(a["bytes"] - b["bytes"]) <= BYTES_TOLERANCE * b["bytes"], (key, a["bytes"], b["bytes"])
    comparison = benchmark["info"]["comparison"]
    assert comparison["bytes"]["in"]["pairs"] == comparison["bytes"]["out"]["pairs"] == ROUNDS * len(CLIENTS)


def test_report_and_kept_files(benchmark):
    output = benchmark["output"]
    with open(output / "end_to_end.md") as f:
        report = f.read()
    rows = {line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")}
    assert {"fedbip", "fedavg", "**fedbip / fedavg**"} <= rows
    assert "Headline: FedBip / FedAvg steady per-round time" in report
    assert "| fedbip | 1 | 2 |" in benchmark["stdout"]  # the table is printed too
    with open(output / "runs" / "fedbip-0" / "rounds.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["round"] for r in records] == list(range(ROUNDS)) and all("aggregation_s" in r for r in records)
    assert os.path.exists(output / "runs" / "fedavg-0" / "server_log.json")
    assert os.listdir(benchmark["workspace"]) == []  # the simulator workspaces were removed


def test_round_times_from_log_lines():
    from benchmarks.end_to_end import ROUND_MARKERS, round_times

    def line(t, name, message):
        return (t, name, message)

    fedbip = [
        line(10.0, "FedBipController", "FedBip round 1/2"),
        line(11.0, "ServerRunner", "assigned task to client site-1: name=train, id=a"),
        line(14.0, "ServerRunner", "got result from client site-1 for task: name=train, id=a"),
        line(15.0, "FedBipController", "FedBip round 2/2"),
        line(19.0, "ServerRunner", "got result from client site-1 for task: name=train, id=b"),
        line(19.5, "FedBipController", "Sending task validate to ['site-1']"),
        line(21.0, "ServerRunner", "got result from client site-1 for task: name=validate, id=c"),
    ]
    rounds = round_times(fedbip, ROUND_MARKERS["fedbip"], 2)
    assert [(r["round"], r["seconds"], r["results"]) for r in rounds] == [(0, 5.0, 1), (1, 4.5, 1)]
    assert rounds[0]["first_task_s"] == 1.0 and rounds[0]["last_result_s"] == 4.0
    assert rounds[0]["after_last_result_s"] == 1.0 and rounds[1]["after_last_result_s"] == 0.5
    assert rounds[1]["first_task_s"] is None

    fedavg = [
        line(0.0, "FedAvg", "\n----\n   Round 0 started.   \n----"),
        line(3.0, "ServerRunner", "got result from client site-2 for task: name=train, id=a"),
        line(3.25, "FedAvg", "\n====\n   Finished FedAvg.   \n===="),
    ]
    assert [r["seconds"] for r in round_times(fedavg, ROUND_MARKERS["fedavg"], 1)] == [3.25]
    with pytest.raises(ValueError, match=r"round\(s\) \[1\]"):
        round_times(fedavg, ROUND_MARKERS["fedavg"], 2)
    with pytest.raises(ValueError, match="end line"):
        round_times(fedbip[:-2], ROUND_MARKERS["fedbip"], 2)


def test_payload_problems_name_what_is_missing():
    from benchmarks.end_to_end import payload_problems

    entries = [{"site": "site-1", "task": "train", "round": 0, "direction": d} for d in ("in", "out")]
    entries += [{"site": "site-1", "task": "validate", "round": 1, "direction": "in"}]
    assert payload_problems(entries, ["site-1"], 1) == ["no payload entry for ('site-1', 'validate', 1, 'out')"]
