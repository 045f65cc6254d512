"""FaultInjector's plan validation, its corruptions, and the filter on a hand-made result (no job)."""

import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import make_reply
from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.client.faults import EXTRA_TENSOR, FAULT_KINDS, FaultInjector, corrupt, validate_faults
from fedbip_nvflare.core import check_update


def _params():
    return {"a.lora_A.weight": np.full((2, 3), 0.5, np.float32), "a.lora_B.weight": np.ones((3, 2), np.float32)}


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("nan", "non-finite"),
        ("inf", "non-finite"),
        ("wrong-shape", "has shape"),
        ("wrong-dtype", "non-floating dtype"),
        ("missing-tensor", "missing tensors"),
        ("extra-tensor", "unexpected tensors"),
    ],
)
def test_each_data_fault_is_one_the_server_rejects(kind, reason):
    import torch

    params = _params()
    bad = corrupt(params, kind)
    assert reason in check_update(bad, {n: torch.as_tensor(v) for n, v in params.items()})
    assert all(np.array_equal(v, _params()[n]) for n, v in params.items()), "the input is not changed"


def test_absurd_norm_stays_finite_and_passes_the_checks():
    import torch

    params = _params()
    bad = corrupt(params, "absurd-norm", scale=1e6)
    assert check_update(bad, {n: torch.as_tensor(v) for n, v in params.items()}) is None
    assert np.allclose(bad["a.lora_B.weight"], 1e6) and bad["a.lora_B.weight"].dtype == np.float32
    assert EXTRA_TENSOR in corrupt(params, "extra-tensor")


@pytest.mark.parametrize(
    "faults,message",
    [
        ("raise", "list"),
        ([{"site": "site-1", "round": 0, "kind": "melt"}], "kind"),
        ([{"site": "", "round": 0, "kind": "nan"}], "site"),
        ([{"site": "site-1", "round": -1, "kind": "nan"}], "round"),
        ([{"site": "site-1", "round": 0, "kind": "nan", "when": 1}], "keys"),
        ([{"site": "site-1", "round": 0, "kind": "nan"}, {"site": "site-1", "round": 0, "kind": "inf"}], "two faults"),
    ],
)
def test_bad_plans_are_refused(faults, message):
    with pytest.raises(ValueError, match=message):
        validate_faults(faults)


def test_a_timeout_needs_a_sleep_and_a_corruption_needs_a_data_kind():
    with pytest.raises(ValueError, match="sleep_s"):
        FaultInjector([{"site": "site-1", "round": 0, "kind": "timeout"}])
    with pytest.raises(ValueError, match="not a data corruption"):
        corrupt(_params(), "crash")
    assert set(FAULT_KINDS) >= {"raise", "crash", "timeout", "nan", "absurd-norm"}


def test_exact_round_wins_over_every_round():
    injector = FaultInjector(
        [{"site": "site-1", "round": None, "kind": "nan"}, {"site": "site-1", "round": 2, "kind": "raise"}]
    )
    assert injector.fault_for("site-1", 0) == "nan"
    assert injector.fault_for("site-1", 2) == "raise"
    assert injector.fault_for("site-2", 2) is None


class _Ctx(FLContext):
    def __init__(self, site):
        super().__init__()
        self._site = site

    def get_identity_name(self, default=""):
        return self._site


def _result(rnd):
    shareable = DXO(data_kind=DataKind.WEIGHTS, data=_params()).to_shareable()
    shareable.set_header(AppConstants.CURRENT_ROUND, rnd)
    return shareable


def test_the_filter_corrupts_only_the_planned_site_and_round():
    injector = FaultInjector([{"site": "site-2", "round": 1, "kind": "nan"}])
    untouched = injector.process(_result(1), _Ctx("site-1"))
    assert np.isfinite(from_shareable(untouched).data["a.lora_A.weight"]).all()
    other_round = injector.process(_result(0), _Ctx("site-2"))
    assert np.isfinite(from_shareable(other_round).data["a.lora_A.weight"]).all()
    hit = injector.process(_result(1), _Ctx("site-2"))
    assert np.isnan(from_shareable(hit).data["a.lora_A.weight"]).any()
    assert hit.get_header(AppConstants.CURRENT_ROUND) == 1


def test_the_filter_raises_for_a_raise_fault_and_passes_error_replies():
    injector = FaultInjector([{"site": "site-2", "round": None, "kind": "raise"}])
    with pytest.raises(RuntimeError, match="injected fault: site-2"):
        injector.process(_result(0), _Ctx("site-2"))
    error = make_reply(ReturnCode.EXECUTION_EXCEPTION)
    assert injector.process(error, _Ctx("site-2")) is error
