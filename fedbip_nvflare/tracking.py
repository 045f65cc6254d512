"""Metrics into NVFlare's experiment tracking (TensorBoard, MLflow, W&B receivers via analytics events)."""

import math
from typing import Any, Mapping, Optional, Sequence

from nvflare.apis.analytix import AnalyticsDataType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo

from fedbip_nvflare.results import matrices_of

MATRICES = ("similarity", "weights")

TRACKING_TYPES = ("tensorboard", "mlflow", "wandb")


def validate_tracking(tracking: Any) -> None:
    """``tracking`` is None (off) or one of :data:`TRACKING_TYPES`; raises ValueError naming the choices."""
    if tracking is not None and tracking not in TRACKING_TYPES:
        raise ValueError(f"tracking must be None or one of {TRACKING_TYPES}, got {tracking!r}")


def track_scalars(component: FLComponent, fl_ctx: FLContext, metrics: Mapping[str, Any], step: int) -> None:
    """Fires one analytics event per finite numeric metric (tag = metric name) at ``step``.

    On a client, NVFlare's ``ConvertToFedEvent`` forwards them to the server's receiver, which files them under
    the site's name; without a receiver they go nowhere.
    """
    for tag, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            dxo = create_analytic_dxo(tag, float(value), AnalyticsDataType.SCALAR, global_step=int(step))
            send_analytic_dxo(component, dxo, fl_ctx)


def track_matrix(
    component: FLComponent, fl_ctx: FLContext, name: str, clients: Sequence[str], matrix: Any, step: int
) -> None:
    """Sends a client × client matrix as one multi-line chart per receiving client: ``<name>/<client i>``.

    Args:
        component: The firing component (the server workflow).
        fl_ctx: Its context.
        name: ``similarity`` or ``weights``.
        clients: Row and column labels.
        matrix: ``[N, N]`` nested lists or array.
        step: The round.
    """
    for i, client in enumerate(clients):
        row = {other: float(matrix[i][k]) for k, other in enumerate(clients)}
        dxo = create_analytic_dxo(f"{name}/{client}", row, AnalyticsDataType.SCALARS, global_step=int(step))
        send_analytic_dxo(component, dxo, fl_ctx)


def track_round_matrices(component: FLComponent, engine: Optional[Any], record: Mapping[str, Any], step: int) -> None:
    """Sends a round record's similarity and weight matrices (see :func:`track_matrix`) under a new context.

    Layer-wise matrices go as their mean over groups (:func:`fedbip_nvflare.results.matrices_of`); a record
    without matrices (no aggregation that round) sends nothing.

    Args:
        component: The firing server component (FedBipController or FedBipModelAggregator).
        engine: The server engine, or None when not running inside NVFlare (then nothing is sent).
        record: One ``rounds.jsonl`` record (``clients`` and the rule's ``similarity`` / ``weights``).
        step: The round.
    """
    if engine is None:
        return
    with engine.new_context() as ctx:
        for name in MATRICES:
            for _, names, matrix in matrices_of(dict(record), name):
                track_matrix(component, ctx, name, names, matrix, step)
