"""NVFlare's FedAvg with a server learning rate (FedOpt's server SGD step without momentum)."""

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.fedavg import FedAvg


def validate_server_learning_rate(server_learning_rate: float, aggregation: str) -> None:
    """Checks a server learning rate: a positive number, and not 1.0 only for ``aggregation="fedavg"``.

    Raises:
        ValueError: Not a positive finite number, or set for a rule other than FedAvg.
    """
    ok = isinstance(server_learning_rate, (int, float)) and not isinstance(server_learning_rate, bool)
    if not ok or not 0 < server_learning_rate < float("inf"):
        raise ValueError(f"server_learning_rate must be a positive number, got {server_learning_rate!r}")
    if server_learning_rate != 1.0 and aggregation != "fedavg":
        raise ValueError(
            f"server_learning_rate applies only to aggregation='fedavg' (got aggregation={aggregation!r}); "
            "remove it or use aggregation='fedavg'"
        )


def apply_server_learning_rate(global_params: dict, aggr_result: FLModel, eta: float) -> FLModel:
    """Scales the averaged step in place: ``avg ← θ + η·(avg − θ)`` for FULL, ``Δ ← η·Δ`` for DIFF.

    Args:
        global_params: The current global model's parameters θ.
        aggr_result: The workflow's aggregated result (FULL average or DIFF).
        eta: Server learning rate η.

    Returns:
        ``aggr_result`` with scaled parameters (names missing from θ are left as averaged).
    """
    if eta == 1.0 or not aggr_result.params:
        return aggr_result
    if aggr_result.params_type == ParamsType.FULL:
        aggr_result.params = {
            n: global_params[n] + eta * (v - global_params[n]) if n in global_params else v
            for n, v in aggr_result.params.items()
        }
    elif aggr_result.params_type == ParamsType.DIFF:
        aggr_result.params = {n: eta * v for n, v in aggr_result.params.items()}
    return aggr_result


class ServerLrFedAvg(FedAvg):
    """``FedAvg`` whose global model moves by ``server_learning_rate`` times the averaged update.

    ``θ ← θ + η·(avg − θ)`` for a FULL average, ``θ ← θ + η·Δ`` for a DIFF; η = 1 is NVFlare's FedAvg.
    Everything else (client selection, in-time aggregation, persistor) is NVFlare's.

    Args:
        *args: ``FedAvg``'s positional arguments.
        server_learning_rate: η > 0.
        **kwargs: ``FedAvg``'s arguments.
    """

    # ``*args`` and ``**kwargs`` both: NVFlare's job export then also serialises FedAvg's own arguments
    # (num_clients, num_rounds, ...), which it finds by walking the base classes only in that case.
    def __init__(self, *args, server_learning_rate: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        validate_server_learning_rate(server_learning_rate, "fedavg")
        self.server_learning_rate = float(server_learning_rate)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        apply_server_learning_rate(model.params, aggr_result, self.server_learning_rate)
        return super().update_model(model, aggr_result)
