"""What the sites send back: numpy copies, or torch tensors to a job that exchanges PyTorch."""

import numpy as np
import torch

from fedbip_nvflare.exchange import in_format_of, to_numpy


def test_what_goes_back_is_in_the_container_the_site_received():
    trained = {"a": torch.arange(4, dtype=torch.float64).reshape(2, 2), "b": np.ones(3, np.float16)}
    back = in_format_of(trained, {"a": torch.zeros(2, 2), "b": torch.zeros(3)})
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in back.values())
    assert torch.equal(back["a"], trained["a"].float()) and torch.equal(back["b"], torch.ones(3))
    back["a"][0, 0] = 7.0
    assert trained["a"][0, 0] == 0.0, "a copy, never the trained tensor itself"
    as_numpy = in_format_of(trained, {"a": np.zeros((2, 2), np.float32), "b": np.zeros(3, np.float32)})
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in as_numpy.values())
    assert all(np.array_equal(as_numpy[n], to_numpy(trained)[n]) for n in trained)
