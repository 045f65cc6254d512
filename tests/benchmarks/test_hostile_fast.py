"""The hostile-client benchmark: properties that follow from FedBip's rule, on synthetic and tiny real task vectors.

No timing is asserted; the aggregation properties use synthetic honest vectors (injected), one smoke run trains real
ones (2 sites, 8 examples, max_length 16).
"""

import json
import math
import os
from typing import Dict, Tuple

import pytest
import torch

from benchmarks import hostile  # noqa: E402

HONEST = ("site-1", "site-2", "site-3")
BOUND = 2.0


def synthetic_honest() -> Tuple[Dict[str, torch.Tensor], Dict[str, Dict[str, torch.Tensor]], Dict[str, dict]]:
    """Three honest task vectors sharing a direction (pairwise cosines about 0.8), over two tensors."""
    g = torch.Generator().manual_seed(0)
    shapes = {"a.lora_A.weight": (4, 16), "a.lora_B.weight": (16, 4)}
    theta0 = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    shared = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    taus = {c: {n: 0.01 * (shared[n] + 0.5 * torch.randn(s, generator=g)) for n, s in shapes.items()} for c in HONEST}
    return theta0, taus, {c: {"task": "synthetic"} for c in HONEST}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("hostile_synthetic"))
    info = hostile.run(output, synthetic_honest, kinds=["negation", "scaled", "copy", "noise", "scaled-noise"])
    return info, output


def _case(info: dict, kind: str, negative: str, bound) -> dict:
    (case,) = [c for c in info["cases"] if (c["kind"], c["negative"], c["norm_bound"]) == (kind, negative, bound)]
    return case


def _assert_close(a: list, b: list) -> None:
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-6)


def test_clip_gives_zero_weight_to_a_hostile_client_with_negative_cosine(synthetic_run):
    info, _ = synthetic_run
    for bound in (None, BOUND):
        case = _case(info, "negation", "clip", bound)
        for name, v in case["honest"].items():
            assert v["cosine"] < 0, name  # the honest clients share a direction, so all oppose site-1's negation
            assert v["weight"] == 0.0, name
        assert case["honest"]["site-1"]["cosine"] == pytest.approx(-1.0, abs=1e-6)
    for case in info["cases"]:
        if case["negative"] == "clip":
            assert all(v["weight"] == 0.0 for v in case["honest"].values() if v["cosine"] < 0)
            assert all(v["weight"] >= 0.0 for v in case["honest"].values())


def test_keep_gives_the_negation_a_negative_weight_in_the_copied_clients_row(synthetic_run):
    info, _ = synthetic_run
    case = _case(info, "negation", "keep", None)
    clients = case["clients"]
    i, h = clients.index("site-1"), clients.index(hostile.HOSTILE)
    row_sum = sum(case["similarity"][i][j] if j != i else 1.0 for j in range(len(clients)))
    assert row_sum > 0  # 1 − 1 + the other honest cosines: no self-only fallback
    assert case["honest"]["site-1"]["weight"] == pytest.approx(-1.0 / row_sum, rel=1e-5)
    assert case["honest"]["site-1"]["weight"] < 0
    assert case["weights"][i][h] == case["honest"]["site-1"]["weight"]


def test_scaled_copy_gets_the_weights_of_a_plain_copy_but_moves_honest_models_more_without_the_bound(synthetic_run):
    info, _ = synthetic_run
    for negative in hostile.POLICIES:
        for bound in (None, BOUND):
            copy, scaled = _case(info, "copy", negative, bound), _case(info, "scaled", negative, bound)
            _assert_close(scaled["weights"], copy["weights"])
            # the bound changes lengths, never cosines, so never the weights
            _assert_close(scaled["weights"], _case(info, "scaled", negative, None)["weights"])
        free, bounded = _case(info, "scaled", negative, None), _case(info, "scaled", negative, BOUND)
        limit = BOUND * bounded["median_norm"]
        assert bounded["hostile_scale"] == pytest.approx(limit / bounded["hostile_norm"], rel=1e-5)
        assert bounded["hostile_scale"] < 0.1
        assert free["summary"]["displacement_max"] > 5 * bounded["summary"]["displacement_max"]
    noise, loud = _case(info, "noise", "clip", None), _case(info, "scaled-noise", "clip", None)
    assert loud["hostile_norm"] == pytest.approx(hostile.SCALE * noise["hostile_norm"], rel=1e-5)
    _assert_close(loud["weights"], noise["weights"])


def test_with_clip_and_the_norm_bound_the_displacement_is_bounded_by_the_median_norms(synthetic_run):
    """With clip each update is a convex combination of clipped τ, so ‖upd‖ ≤ bound × median norm in each round."""
    info, _ = synthetic_run
    for case in info["cases"]:
        if case["negative"] != "clip" or case["norm_bound"] != BOUND:
            continue
        limit = BOUND * (case["median_norm"] + case["median_norm_honest"])
        for name, v in case["honest"].items():
            assert v["displacement"] <= limit * (1 + 1e-5), (case["kind"], name)


def test_the_hostile_client_is_absent_from_the_honest_only_round(synthetic_run):
    info, _ = synthetic_run
    case = _case(info, "scaled", "clip", None)
    assert len(case["weights_honest_only"]) == len(HONEST)
    assert len(case["weights"]) == len(HONEST) + 1
    for row in case["weights"]:
        assert sum(row) == pytest.approx(1.0, abs=1e-5)


def test_synthetic_results_files_hold_the_table_and_findings(synthetic_run):
    info, output = synthetic_run
    with open(os.path.join(output, hostile.JSON_FILE)) as f:
        saved = json.load(f)
    assert len(saved["cases"]) == 5 * len(hostile.POLICIES) * 2 and "git_commit" in saved and "machine" in saved
    with open(os.path.join(output, hostile.MARKDOWN_FILE)) as f:
        table = f.read()
    assert "| negation | clip | none |" in table and "| scaled-noise | keep | 2 |" in table
    assert "Cosines are scale-free" in table and "norm bound 2 cuts" in table


def test_keep_bounded_weighs_the_negation_like_clip_in_the_copied_clients_row(synthetic_run):
    info, _ = synthetic_run
    bounded, keep = _case(info, "negation", "keep-bounded", None), _case(info, "negation", "keep", None)
    target = bounded["target"]
    assert bounded["honest"][target]["weight"] == pytest.approx(0.0, abs=1e-12)
    assert keep["honest"][target]["weight"] < 0
    assert bounded["honest"][target]["relative_displacement"] < keep["honest"][target]["relative_displacement"]


def test_unknown_kind_is_rejected():
    _, taus, _ = synthetic_honest()
    with pytest.raises(ValueError, match="unknown hostile kind"):
        hostile.hostile_vector("flip", taus, "site-1")


def test_real_training_smoke(tmp_path, minilm_path):
    output = str(tmp_path / "hostile")
    args = ["--sites", "site-1", "site-2", "--n-train", "8", "--max-length", "16", "--threads", "1"]
    code = hostile.main([*args, "--model", minilm_path, "--kinds", "negation", "scaled", "--output", output])
    assert code == 0
    with open(os.path.join(output, hostile.JSON_FILE)) as f:
        info = json.load(f)
    assert info["settings"]["n_train"] == 8 and info["settings"]["max_length"] == 16
    assert set(info["honest"]) == {"site-1", "site-2"}
    for meta in info["honest"].values():
        assert meta["norm"] > 0 and meta["n_examples"] == 8 and math.isfinite(meta["train_loss"])
    assert len(info["cases"]) == 2 * len(hostile.POLICIES) * 2
    for case in info["cases"]:
        assert all(math.isfinite(v["relative_displacement"]) for v in case["honest"].values())
        if case["negative"] == "clip":
            assert all(v["weight"] == 0.0 for v in case["honest"].values() if v["cosine"] < 0)
    assert _case(info, "negation", "clip", None)["honest"]["site-1"]["cosine"] == pytest.approx(-1.0, abs=1e-5)
    with open(os.path.join(output, hostile.MARKDOWN_FILE)) as f:
        assert "| scaled | clip | 2 |" in f.read()
