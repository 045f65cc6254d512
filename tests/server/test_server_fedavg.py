"""ServerLrFedAvg: NVFlare's FedAvg with a server learning rate."""

import numpy as np
import pytest
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from fedbip_nvflare.server.fedavg import ServerLrFedAvg, apply_server_learning_rate, validate_server_learning_rate
from fedbip_nvflare.server.rules import make_rule


def _global():
    return FLModel(params={"w": np.array([1.0, 2.0]), "b": np.array([0.0])}, params_type=ParamsType.FULL)


@pytest.mark.parametrize("eta", [1.0, 2.5, 0.5])
def test_full_average_moves_the_global_model_by_eta_times_the_update(eta):
    assert ServerLrFedAvg(server_learning_rate=eta, num_clients=2, num_rounds=1).server_learning_rate == eta
    avg = FLModel(params={"w": np.array([2.0, 0.0]), "b": np.array([1.0])}, params_type=ParamsType.FULL)
    updated = apply_server_learning_rate(_global().params, avg, eta)
    np.testing.assert_allclose(updated.params["w"], [1.0 + eta * 1.0, 2.0 - eta * 2.0])
    np.testing.assert_allclose(updated.params["b"], [eta])


def test_diff_average_is_scaled_by_eta():
    diff = FLModel(params={"w": np.array([0.5, -1.0]), "b": np.array([0.25])}, params_type=ParamsType.DIFF)
    updated = apply_server_learning_rate(_global().params, diff, 3.0)
    np.testing.assert_allclose(updated.params["w"], [1.5, -3.0])
    np.testing.assert_allclose(updated.params["b"], [0.75])


@pytest.mark.parametrize("eta", [0, -1.0, float("inf"), float("nan"), "2", True])
def test_bad_server_learning_rates_are_rejected(eta):
    with pytest.raises(ValueError, match="server_learning_rate must be a positive number"):
        validate_server_learning_rate(eta)


def test_server_learning_rate_only_for_fedavg():
    make_rule("fedavg", server_learning_rate=2.0)
    with pytest.raises(ValueError, match="only to aggregation='fedavg'"):
        make_rule("fedbip", server_learning_rate=2.0)
