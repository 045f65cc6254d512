"""The similarity table averages the server's matrices by round over partner and other pairs, from rounds.jsonl."""

import json

from benchmarks.similarity_table import BEGIN, END, main, pair_similarities, similarity_table

CLIENTS = ["site-1", "site-2", "site-3"]
GROUPS = {"site-1": "a", "site-2": "a", "site-3": "b"}


def _folder(tmp_path, name, data_suite, matrices_by_seed):
    out = tmp_path / name
    for seed, matrices in matrices_by_seed.items():
        folder = out / "fedbip" / f"seed{seed}"
        folder.mkdir(parents=True)
        lines = [json.dumps({"round": r, "clients": CLIENTS, "similarity": m}) for r, m in enumerate(matrices)]
        lines.append(
            json.dumps({"round": 9, "clients": CLIENTS, "similarity": {"layers.0": matrices[0]}})
        )  # layer-wise
        (folder / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    info = {"spec": {"suite": name}, "data": {"suite": data_suite}, "groups": GROUPS, "runs": []}
    (out / "benchmark.json").write_text(json.dumps(info))
    return str(out)


def _matrix(partners, others):
    return [[1.0, partners, others], [partners, 1.0, others], [others, others, 1.0]]


def test_partners_and_others_by_round(tmp_path):
    out = _folder(tmp_path, "text-groups", "text-groups", {0: [_matrix(0.5, 0.1)], 1: [_matrix(0.3, -0.1)]})
    pairs = pair_similarities(out, "fedbip")
    assert sorted(pairs) == [(0, False), (0, True)]
    assert len(pairs[(0, True)]) == 4 and len(pairs[(0, False)]) == 8  # 2 ordered pairs per seed, 4 others
    table = similarity_table([out], ["fedbip", "fedbip-cumulative"])
    assert "| text-groups (2 seeds) | fedbip | 0.40 / 0.00 |" in table  # (0.5 + 0.3) / 2, (0.1 - 0.1) / 2
    assert "fedbip-cumulative" not in table.split("\n\n")[0]


def test_one_task_suite_makes_every_pair_partners(tmp_path):
    out = _folder(tmp_path, "label-skew-1.0", "label-skew", {0: [_matrix(0.6, 0.3), _matrix(0.2, 0.2)]})
    table = similarity_table([out])
    assert "| label-skew-1.0 (1 seed) | fedbip | 0.40 / – | 0.20 / – |" in table


def test_main_writes_between_markers(tmp_path):
    out = _folder(tmp_path, "x", "x", {0: [_matrix(0.5, 0.1)]})
    page = tmp_path / "page.md"
    page.write_text(f"a\n{BEGIN}\nold\n{END}\nb\n")
    assert main([out, "--write", str(page)]) == 0
    assert "old" not in page.read_text() and "| x (1 seed) | fedbip | 0.50 / 0.10 |" in page.read_text()
    assert main([str(tmp_path / "missing")]) == 2
