"""The shared failure check of a run's results and the per-client table's marking of failed sites."""

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.results import format_comparison, format_table, load_run, run_failure, site_errors


def _ok(accuracy=0.5):
    return {"task": "ag_news", "n_train": 8, "accuracy_before": 0.25, "accuracy": accuracy, "adapter_dir": "/a"}


def _failed(reason="site set-up failed: ValueError: bad"):
    return {"task": None, "n_train": None, "accuracy_before": None, "accuracy": None, K.ERROR: reason}


def test_no_results_means_the_server_aborted():
    assert run_failure(None, 2) == "the server aborted: it wrote no results"


def test_no_client_with_a_result_is_a_failure_naming_a_sites_error():
    results = {"clients": {"site-1": _failed(), "site-2": _failed("train failed: OSError: x")}}
    reason = run_failure(results, 1)
    assert reason.startswith("no client produced a result (2 client(s) failed")
    assert "site-1: site set-up failed: ValueError: bad" in reason and "\n" not in reason


def test_fewer_than_min_clients_is_a_failure_and_enough_is_not():
    results = {"clients": {"site-1": _ok(), "site-2": _failed(), "site-3": _ok()}}
    assert run_failure(results, 2) is None
    reason = run_failure(results, 3)
    assert "only 2 of 3 clients produced a result, fewer than min_clients=3" in reason and "site-2:" in reason


def test_min_clients_defaults_to_the_runs_own():
    results = {K.MIN_CLIENTS: 2, "clients": {"site-1": _ok(), "site-2": _failed()}}
    assert "min_clients=2" in run_failure(results)
    assert run_failure({"clients": {"site-1": _ok(), "site-2": _failed()}}) is None  # older results: at least 1


def test_a_client_without_accuracy_or_error_counts_as_failed():
    assert site_errors({"clients": {"site-1": {"task": "x"}, "site-2": _ok()}}) == {"site-1": "no final result"}


def test_table_marks_failed_sites_with_their_error_and_keeps_the_mean_of_the_others():
    table = format_table({"clients": {"site-1": _ok(0.5), "site-2": _failed("train failed: boom")}})
    lines = table.splitlines()
    assert lines[2] == "site-2     FAILED: train failed: boom"
    assert "None" not in table
    assert lines[-1].startswith("mean") and "50.00" in lines[-1]


def test_load_run_of_a_folder_without_results_says_the_server_aborted(tmp_path):
    results, reason = load_run(str(tmp_path), 2)
    assert results is None and reason.startswith("the server aborted or did not finish: no fedbip/results.json")


def test_fedbip_report_exits_non_zero_naming_a_failed_run(tmp_path, capsys):
    import json

    from fedbip_nvflare.cli import main

    for name, clients in (("good", {"site-1": _ok()}), ("bad", {"site-1": _failed("train failed: boom")})):
        (tmp_path / name).mkdir()
        results = {"method": name, "num_rounds": 1, K.MIN_CLIENTS: 1, "clients": clients}
        (tmp_path / name / K.RESULTS_FILE).write_text(json.dumps(results))
    assert main(["report", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "site-1     FAILED: train failed: boom" in captured.out
    assert captured.err.strip() == (
        "fedbip report: FAILED bad: no client produced a result (1 client(s) failed; site-1: train failed: boom)"
    )


def test_comparison_puts_methods_side_by_side_with_deltas_against_local():
    runs = {
        "fedbip": {"clients": {"site-1": _ok(0.80), "site-2": _ok(0.50)}},
        "local": {"clients": {"site-1": _ok(0.70), "site-2": _ok(0.60)}},
        "fedavg": {"clients": {"site-1": _ok(0.40), "site-2": _failed()}},
    }
    lines = format_comparison(runs, "local").splitlines()
    assert lines[0].split()[:5] == ["site", "task", "fedbip", "local", "fedavg"]
    assert lines[1].split() == ["site-1", "ag_news", "80.0", "70.0", "40.0", "+10.0", "-30.0"]
    # a site a method has no result for shows "-", and its Δ too
    assert lines[2].split() == ["site-2", "ag_news", "50.0", "60.0", "-", "-10.0", "-"]
    # the mean covers the sites every method has a result for
    assert lines[3].split() == ["mean", "(1", "sites)", "80.0", "70.0", "40.0", "+10.0", "-30.0"]
