"""Tests for the built-in offline suite `text-tasks` (needs `python -m fedbip_nvflare.assets fetch`)."""

from collections import Counter

import pytest

from fedbip_nvflare.assets import require_data_dir
from fedbip_nvflare.data import SUITES, TEXT_TASKS, load_suite_site, site_names

try:
    require_data_dir()
except FileNotFoundError as e:
    pytest.skip(str(e), allow_module_level=True)

N_TRAIN, N_TEST = 300, 200  # the defaults


def _balanced(labels, num_classes):
    counts = [Counter(labels).get(c, 0) for c in range(num_classes)]
    return max(counts) - min(counts) <= 1


def test_site_names():
    assert site_names(3) == ["site-1", "site-2", "site-3"]
    with pytest.raises(ValueError):
        site_names(0)


@pytest.mark.parametrize("k", range(1, 9))
def test_each_task_loads(k):
    data = load_suite_site("text-tasks", f"site-{k}", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    assert data.task == TEXT_TASKS[k - 1]
    assert 2 <= len(data.label_names) <= 8
    assert (len(data.train), len(data.test)) == (N_TRAIN, N_TEST)
    for split in (data.train, data.test):
        assert len(split.texts) == len(split.labels)
        assert all(isinstance(t, str) and t.strip() for t in split.texts)
        assert set(split.labels) == set(range(len(data.label_names)))
    assert _balanced(data.train.labels, len(data.label_names))
    if data.task != "reuters-r8":  # its test split has only 10 "grain" docs: see the test below
        assert _balanced(data.test.labels, len(data.label_names))
    assert not set(data.train.texts) & set(data.test.texts)


def test_all_tasks_differ():
    tasks = [load_suite_site("text-tasks", s, n_train=10, n_test=10).task for s in site_names(8)]
    assert tasks == TEXT_TASKS == SUITES["text-tasks"] and len(set(tasks)) == 8


def test_deterministic_per_seed():
    a = load_suite_site("text-tasks", "site-5", n_train=50, n_test=30, seed=0)
    assert a == load_suite_site("text-tasks", "site-5", n_train=50, n_test=30, seed=0)
    b = load_suite_site("text-tasks", "site-5", n_train=50, n_test=30, seed=1)
    assert a.label_names == b.label_names and a.train.texts != b.train.texts


def test_site_beyond_eight_gets_other_data():
    a = load_suite_site("text-tasks", "site-2", n_train=50, n_test=30)
    b = load_suite_site("text-tasks", "site-10", n_train=50, n_test=30)
    assert a.task == b.task and a.train.texts != b.train.texts


def test_unknown_suite_and_site():
    with pytest.raises(ValueError, match="text-tasks"):
        load_suite_site("nope", "site-1")
    for bad in ("site-0", "client-1", "site-x"):
        with pytest.raises(ValueError, match="site-1"):
            load_suite_site("text-tasks", bad)


def test_small_class_is_exhausted_and_rest_stay_balanced():
    data = load_suite_site("text-tasks", "site-4", n_train=300, n_test=200)  # reuters-r8: 10 "grain" test docs
    counts = Counter(data.test.labels)
    grain = data.label_names.index("grain")
    others = [n for c, n in counts.items() if c != grain]
    assert counts[grain] == 10 and max(others) - min(others) <= 1 and sum(counts.values()) == 200
