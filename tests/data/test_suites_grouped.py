"""Tests for the offline suites `text-groups` and `label-skew` and `suite_groups` (need the fetched datasets)."""

from collections import Counter

import numpy as np
import pytest

from fedbip_nvflare.assets import require_data_dir
from fedbip_nvflare.client.site import load_task_data
from fedbip_nvflare.data import (
    GROUP_TASKS,
    SUITES,
    TEXT_TASKS,
    TextTaskData,
    load_suite_site,
    site_names,
    suite_groups,
)

try:
    require_data_dir()
except FileNotFoundError as e:
    pytest.skip(str(e), allow_module_level=True)


def _load(suite, num_clients, **kwargs):
    return [load_suite_site(suite, site, num_clients=num_clients, **kwargs) for site in site_names(num_clients)]


def _pairwise_disjoint(sets):
    return all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1 :])


def test_suites_listed():
    assert set(SUITES) == {"text-tasks", "text-groups", "label-skew"}
    assert SUITES["text-groups"] == GROUP_TASKS and len(GROUP_TASKS) == 4 and set(GROUP_TASKS) <= set(TEXT_TASKS)


@pytest.mark.parametrize("group_size", [2, 3])
def test_text_groups_partners_share_task_with_disjoint_data(group_size):
    n_train, n_test = 40, 500
    sites = _load("text-groups", 4 * group_size, n_train=n_train, n_test=n_test, group_size=group_size)
    for g, task in enumerate(GROUP_TASKS):
        partners = sites[g * group_size : (g + 1) * group_size]
        assert {d.task for d in partners} == {task}
        assert all(d.label_names == partners[0].label_names for d in partners)
        assert all((len(d.train), len(d.test)) == (n_train, n_test) for d in partners)
        # No text is in two of the partners' splits: train vs train, test vs test, and test vs train.
        assert _pairwise_disjoint([set(d.train.texts) for d in partners] + [set(d.test.texts) for d in partners])
        for d in partners:
            counts = Counter(d.train.labels)
            assert set(counts) == set(range(len(d.label_names))) and max(counts.values()) - min(counts.values()) <= 1
    assert len({d.task for d in sites}) == 4


def test_text_groups_cycle_and_groups_differ():
    a, b = load_suite_site("text-groups", "site-1", 20, 20), load_suite_site("text-groups", "site-9", 20, 20)
    assert a.task == b.task == GROUP_TASKS[0] and a.train.texts != b.train.texts
    assert load_suite_site("text-groups", "site-3", 20, 20).task == GROUP_TASKS[1]
    assert load_suite_site("text-groups", "site-3", 20, 20, group_size=3).task == GROUP_TASKS[0]


def test_text_groups_deterministic_per_seed():
    a = load_suite_site("text-groups", "site-4", n_train=30, n_test=30, seed=0)
    assert a == load_suite_site("text-groups", "site-4", n_train=30, n_test=30, seed=0)
    assert a.train.texts != load_suite_site("text-groups", "site-4", n_train=30, n_test=30, seed=1).train.texts


def _mean_max_share(sites):
    return float(np.mean([max(Counter(d.train.labels).values()) / len(d.train) for d in sites]))


def test_label_skew_shared_label_space_and_disjoint_training_texts():
    sites = _load("label-skew", 10, n_train=100, n_test=50, alpha=0.1)
    names = sites[0].label_names
    assert len(names) == 20 and names == sorted(names) and all(d.label_names == names for d in sites)
    assert {d.task for d in sites} == {"20newsgroups"}
    assert all((len(d.train), len(d.test)) == (100, 50) for d in sites)
    assert _pairwise_disjoint([set(d.train.texts) for d in sites])
    train_texts = set().union(*(d.train.texts for d in sites))
    assert not train_texts & set().union(*(d.test.texts for d in sites))
    for d in sites:  # the test set follows the site's label proportions
        train, test = (np.bincount(split.labels, minlength=20) / len(split) for split in (d.train, d.test))
        assert 0.5 * np.abs(train - test).sum() < 0.1


def test_label_skew_alpha_controls_skew():
    skewed = _mean_max_share(_load("label-skew", 10, n_train=100, n_test=20, alpha=0.1))
    mild = _mean_max_share(_load("label-skew", 10, n_train=100, n_test=20, alpha=10.0))
    assert skewed > 0.35 and mild < 0.15 and skewed > 3 * mild


def test_label_skew_deterministic_per_seed():
    kwargs = dict(n_train=50, n_test=20, num_clients=5, alpha=0.5)
    a = load_suite_site("label-skew", "site-3", seed=0, **kwargs)
    assert a == load_suite_site("label-skew", "site-3", seed=0, **kwargs)
    assert a.train.texts != load_suite_site("label-skew", "site-3", seed=1, **kwargs).train.texts


def test_label_skew_needs_num_clients_and_valid_options():
    with pytest.raises(ValueError, match="num_clients"):
        load_suite_site("label-skew", "site-1")
    with pytest.raises(ValueError, match="num_clients"):
        load_task_data({"suite": "label-skew", "n_train": 10, "n_test": 10}, "site-1")
    with pytest.raises(ValueError, match="site-4"):
        load_suite_site("label-skew", "site-4", num_clients=3)
    with pytest.raises(ValueError, match="alpha"):
        load_suite_site("label-skew", "site-1", num_clients=3, alpha=0.0)
    with pytest.raises(ValueError, match="group_size"):
        load_suite_site("text-groups", "site-1", group_size=0)


def test_load_task_data_passes_suite_options():
    config = {"suite": "label-skew", "n_train": 30, "n_test": 10, "num_clients": "4", "alpha": "0.3", "seed": 2}
    expected = load_suite_site("label-skew", "site-2", 30, 10, seed=2, num_clients=4, alpha=0.3)
    assert load_task_data(config, "site-2") == expected
    config = {"suite": "text-groups", "n_train": 20, "n_test": 10, "group_size": 3}
    assert load_task_data(config, "site-4").task == GROUP_TASKS[1]


def test_suite_groups():
    groups = suite_groups("text-groups", 8)
    assert list(groups) == site_names(8)
    assert [groups[f"site-{k}"] for k in (1, 3, 5, 7)] == [f"{t}-g{g}" for g, t in enumerate(GROUP_TASKS)]
    assert all(groups[f"site-{k}"] == groups[f"site-{k + 1}"] for k in (1, 3, 5, 7)) and len(set(groups.values())) == 4
    groups3 = suite_groups("text-groups", 12, group_size=3)
    assert [len([s for s in groups3 if groups3[s] == g]) for g in dict.fromkeys(groups3.values())] == [3, 3, 3, 3]
    assert len(set(suite_groups("text-tasks", 8).values())) == 8
    assert suite_groups("text-tasks", 8)["site-2"].startswith(TEXT_TASKS[1])
    assert len(set(suite_groups("label-skew", 10, group_size=3).values())) == 10
    with pytest.raises(ValueError, match="text-groups"):
        suite_groups("nope", 4)


def test_conflict_sites_get_every_label_shifted_by_one():
    config = {"suite": "text-groups", "n_train": 20, "n_test": 10, "seed": 1}
    honest = load_task_data(config, "site-2")
    for sites in ("site-2,site-9", ["site-2"]):
        shifted = load_task_data({**config, "conflict_sites": sites}, "site-2")
        c = len(honest.label_names)
        assert shifted.task == honest.task + "-shifted" and shifted.label_names == honest.label_names
        for a, b in ((honest.train, shifted.train), (honest.test, shifted.test)):
            assert b.texts == a.texts and b.labels == [(y + 1) % c for y in a.labels]
            assert all(x != y for x, y in zip(a.labels, b.labels))
    assert load_task_data({**config, "conflict_sites": "site-2"}, "site-1") == load_task_data(config, "site-1")


def test_conflict_sites_form_their_own_groups():
    groups = suite_groups("text-groups", 4, conflict_sites="site-2")
    assert groups["site-2"] == groups["site-1"] + "-shifted" and groups["site-3"] == groups["site-4"]
    assert suite_groups("label-skew", 3, conflict_sites=["site-3"])["site-3"].endswith("-site-3-shifted")


def test_shift_labels_needs_two_classes():
    from fedbip_nvflare.data import TextSplit, shift_labels

    one = TextTaskData("t", ["only"], TextSplit(["a"], [0]), TextSplit(["b"], [0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        shift_labels(one)
