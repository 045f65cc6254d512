"""The FedAvg baseline: its rule (run as NVFlare's FedAvg workflow) and FedAvg with a server learning rate."""

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Tuple

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.fedavg import FedAvg

from fedbip_nvflare.server.rule import AggregationRule, Params


def validate_server_learning_rate(server_learning_rate: float) -> None:
    """Checks a server learning rate: a positive finite number.

    Raises:
        ValueError: Not a positive finite number.
    """
    ok = isinstance(server_learning_rate, (int, float)) and not isinstance(server_learning_rate, bool)
    if not ok or not 0 < server_learning_rate < float("inf"):
        raise ValueError(f"server_learning_rate must be a positive number, got {server_learning_rate!r}")


@dataclass(frozen=True)
class FedAvgRule(AggregationRule):
    """FedAvg: one global model, the example-weighted mean of the clients' (LoRA) parameters.

    It runs as NVFlare's own ``FedAvg`` workflow (``nvflare_fedavg``: ``FedBipRecipe`` builds that workflow, or
    :class:`ServerLrFedAvg` for a server learning rate other than 1), not through ``FedBipController``.

    Attributes:
        server_learning_rate: η > 0: the global model moves by η times the averaged update (1.0: plain FedAvg).

    Raises:
        ValueError: ``server_learning_rate`` is not a positive number.
    """

    name: ClassVar[str] = "fedavg"
    nvflare_fedavg: ClassVar[bool] = True
    exclusive_options: ClassVar[Dict[str, str]] = {
        "server_learning_rate": (
            "server_learning_rate applies only to aggregation='fedavg' (got aggregation={name!r}); "
            "remove it or use aggregation='fedavg'"
        )
    }

    server_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        validate_server_learning_rate(self.server_learning_rate)
        object.__setattr__(self, "server_learning_rate", float(self.server_learning_rate))

    @classmethod
    def check_options(cls, options: Mapping[str, Any], others: List[type]) -> None:
        """Like every rule's, but FedAvg takes no ``aggregation_options`` besides its server learning rate."""
        unknown = {k: v for k, v in options.items() if k not in cls.option_names()}
        if unknown and not any(k in other.exclusive_options for k in unknown for other in others):
            raise ValueError(f"aggregation 'fedavg' takes no aggregation_options, got {unknown!r}")
        super().check_options(options, others)

    def apply(self, sent, returned, theta0_of, shared=None, spaces=None) -> Tuple[Dict[str, Params], dict]:
        """Not a per-client round: FedAvg runs as NVFlare's FedAvg workflow (see the class doc).

        Raises:
            RuntimeError: Always.
        """
        raise RuntimeError(
            "aggregation 'fedavg' runs as NVFlare's FedAvg workflow (FedBipRecipe(aggregation='fedavg') builds it), "
            "not through FedBipController or FedBipModelAggregator"
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
        validate_server_learning_rate(server_learning_rate)
        self.server_learning_rate = float(server_learning_rate)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        apply_server_learning_rate(model.params, aggr_result, self.server_learning_rate)
        return super().update_model(model, aggr_result)
