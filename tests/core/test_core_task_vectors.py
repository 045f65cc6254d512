"""task_vector, apply_update, check_update and l2_norm."""

import math

import numpy as np
import pytest
import torch

from fedbip_nvflare.core import apply_update, check_update, l2_norm, task_vector

REF = {"enc.layer.0.w": torch.zeros(2, 3), "enc.layer.0.b": torch.zeros(3)}


def good_numpy():
    return {"enc.layer.0.w": np.ones((2, 3), dtype=np.float32), "enc.layer.0.b": np.full(3, 0.5, dtype=np.float32)}


def test_task_vector_is_theta_minus_theta_bar_in_fp32():
    theta = {"w": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "b": torch.tensor([3.0])}
    bar = {"b": torch.tensor([1.0]), "w": torch.tensor([0.5, 1.0], dtype=torch.bfloat16)}
    tau = task_vector(theta, bar)
    assert list(tau) == ["b", "w"]  # theta_bar's order
    assert tau["w"].dtype == torch.float32 and tau["b"].dtype == torch.float32
    assert torch.equal(tau["w"], torch.tensor([1.0, -3.0]))
    assert torch.equal(tau["b"], torch.tensor([2.0]))


def test_task_vector_accepts_numpy_like_tensors_converted_by_the_caller():
    theta = {"w": torch.as_tensor(np.array([1.0, 2.0], dtype=np.float32))}
    assert torch.equal(task_vector(theta, {"w": torch.tensor([1.0, 1.0])})["w"], torch.tensor([0.0, 1.0]))


def test_apply_update_adds_and_keeps_dtype():
    bar = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "b": torch.tensor([0.25])}
    upd = {"w": torch.tensor([0.5, -1.0]), "b": torch.tensor([0.5], dtype=torch.float16)}
    out = apply_update(bar, upd)
    assert out["w"].dtype == torch.bfloat16 and out["b"].dtype == torch.float32
    assert torch.equal(out["w"], torch.tensor([1.5, 1.0], dtype=torch.bfloat16))
    assert torch.equal(out["b"], torch.tensor([0.75]))
    assert torch.equal(bar["w"], torch.tensor([1.0, 2.0], dtype=torch.bfloat16))  # input untouched


def test_apply_task_vector_roundtrip_is_exact_for_fp32_representable_values():
    bar = {"w": torch.tensor([0.5, 1.25, -3.0])}
    theta = {"w": torch.tensor([1.0, 1.0, 1.0])}
    assert torch.equal(apply_update(bar, task_vector(theta, bar))["w"], theta["w"])


def test_check_update_accepts_float_tensors_and_numpy_arrays():
    assert check_update(good_numpy(), REF) is None
    assert check_update({n: torch.ones_like(t) for n, t in REF.items()}, REF) is None
    assert check_update({n: np.asarray(v, dtype=np.float64) for n, v in good_numpy().items()}, REF) is None
    assert check_update({n: torch.ones_like(t, dtype=torch.bfloat16) for n, t in REF.items()}, REF) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_update_rejects_non_finite(bad):
    params = good_numpy()
    params["enc.layer.0.b"][1] = bad
    reason = check_update(params, REF)
    assert reason is not None and "enc.layer.0.b" in reason and "non-finite" in reason


def test_check_update_rejects_wrong_shape():
    params = good_numpy()
    params["enc.layer.0.w"] = np.ones((3, 2), dtype=np.float32)
    reason = check_update(params, REF)
    assert reason is not None and "enc.layer.0.w" in reason and "(3, 2)" in reason and "(2, 3)" in reason


def test_check_update_rejects_same_numel_flattened():
    params = good_numpy()
    params["enc.layer.0.w"] = np.ones(6, dtype=np.float32)
    assert "shape" in check_update(params, REF)


def test_check_update_rejects_missing_names():
    params = good_numpy()
    del params["enc.layer.0.b"]
    reason = check_update(params, REF)
    assert reason is not None and "missing" in reason and "enc.layer.0.b" in reason


def test_check_update_rejects_extra_names():
    params = good_numpy()
    params["private.head.weight"] = np.ones(2, dtype=np.float32)
    reason = check_update(params, REF)
    assert reason is not None and "unexpected" in reason and "private.head.weight" in reason


def test_check_update_counts_many_missing_names():
    ref = {f"t{i}": torch.zeros(1) for i in range(5)}
    assert "(+2 more)" in check_update({}, ref)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_check_update_rejects_non_float_dtypes(dtype):
    params = good_numpy()
    params["enc.layer.0.w"] = np.ones((2, 3), dtype=dtype)
    reason = check_update(params, REF)
    assert reason is not None and "enc.layer.0.w" in reason and "dtype" in reason


def test_check_update_rejects_non_numeric():
    params = good_numpy()
    params["enc.layer.0.b"] = "not a tensor"
    reason = check_update(params, REF)
    assert reason is not None and "enc.layer.0.b" in reason


def test_check_update_max_abs():
    params = good_numpy()
    assert check_update(params, REF, max_abs=1.0) is None
    params["enc.layer.0.w"][0, 0] = -1.5
    reason = check_update(params, REF, max_abs=1.0)
    assert reason is not None and "enc.layer.0.w" in reason


def test_l2_norm():
    assert math.isclose(l2_norm({"a": torch.tensor([3.0]), "b": torch.tensor([[4.0, 12.0]])}), 13.0)
    assert l2_norm({"a": torch.zeros(4)}) == 0.0


def test_params_digest_matches_across_numpy_and_torch_and_detects_changes():
    import numpy as np

    from fedbip_nvflare.core import params_digest

    params = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4)}
    as_numpy = {n: t.numpy().copy() for n, t in reversed(list(params.items()))}
    assert params_digest(params) == params_digest(as_numpy)
    changed = {**as_numpy, "a": np.nextafter(as_numpy["a"], np.float32(2))}
    assert params_digest(changed) != params_digest(params)
    renamed = {"c": params["b"], "a": params["a"]}
    assert params_digest(renamed) != params_digest(params)


def test_clip_to_median_norm_scales_only_outsized_vectors():
    from fedbip_nvflare.core import clip_to_median_norm

    vectors = {
        "a": {"w": torch.tensor([3.0, 4.0])},  # norm 5
        "b": {"w": torch.tensor([0.0, 6.0])},  # norm 6 (the median)
        "c": {"w": torch.tensor([60.0, 80.0])},  # norm 100: a scaled-up copy
    }
    clipped, scales = clip_to_median_norm(vectors, bound=2.0)
    assert set(scales) == {"c"} and math.isclose(scales["c"], 12.0 / 100.0)
    assert torch.allclose(clipped["c"]["w"], torch.tensor([7.2, 9.6]))
    assert torch.equal(clipped["a"]["w"], vectors["a"]["w"]) and torch.equal(clipped["b"]["w"], vectors["b"]["w"])
    for bad in (0, -1.0, True, "2"):
        with pytest.raises(ValueError, match="norm bound"):
            clip_to_median_norm(vectors, bad)
