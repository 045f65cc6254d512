"""Heatmaps name what they show: each site's task (and group), and ground-truth partners marked."""

import os

import pytest

from fedbip_nvflare import plots

CLIENTS = ["site-1", "site-2", "site-3", "site-4"]
TASKS = {"site-1": "snli", "site-2": "rte", "site-3": "sst2", "site-4": "imdb"}
GROUPS = {"site-1": "entailment", "site-2": "entailment", "site-3": "sentiment", "site-4": "sentiment"}


def test_labels_name_the_task_and_the_group():
    assert plots.site_labels(CLIENTS[:2], TASKS) == ["site-1\nsnli", "site-2\nrte"]
    assert plots.site_labels(CLIENTS[:2], TASKS, GROUPS) == ["site-1\nsnli [entailment]", "site-2\nrte [entailment]"]
    # a site whose task is unknown keeps its name alone
    assert plots.site_labels(["site-9"], {"site-9": None}) == ["site-9"]


def test_partner_cells_are_off_diagonal_pairs_of_a_group():
    assert plots.partner_cells(CLIENTS, GROUPS) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    assert plots.partner_cells(CLIENTS, None) == []
    # every site its own group: no partners
    assert plots.partner_cells(CLIENTS, {c: c for c in CLIENTS}) == []


def test_heatmap_outlines_partner_cells(tmp_path, monkeypatch):
    outlined = []
    real_rectangle = plots.plt.Rectangle

    def rectangle(xy, *args, **kwargs):
        outlined.append(tuple(xy))
        return real_rectangle(xy, *args, **kwargs)

    monkeypatch.setattr(plots.plt, "Rectangle", rectangle)
    matrix = [[0.7 if i == k else 0.1 for k in range(4)] for i in range(4)]
    path = str(tmp_path / "w.png")
    labels = plots.site_labels(CLIENTS, TASKS, GROUPS)
    plots.plot_weight_matrices(matrix, matrix, labels, path, "t", (0, 2), partners=plots.partner_cells(CLIENTS, GROUPS))
    assert os.path.getsize(path) > 0
    # two panels, four partner cells each, at (k - 0.5, i - 0.5)
    assert sorted(outlined) == sorted([(k - 0.5, i - 0.5) for i, k in [(0, 1), (1, 0), (2, 3), (3, 2)]] * 2)


@pytest.mark.parametrize("groups", [None, {}])
def test_heatmap_without_groups_outlines_nothing(tmp_path, groups):
    matrix = [[0.5, 0.5], [0.5, 0.5]]
    path = str(tmp_path / "w.png")
    plots.plot_weight_matrices(
        matrix, matrix, plots.site_labels(CLIENTS[:2], TASKS, groups), path, "t", (0, 1), partners=()
    )
    assert os.path.getsize(path) > 0
