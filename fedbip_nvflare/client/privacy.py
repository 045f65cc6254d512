"""Privacy filters for FedBip results: NVFlare's DXO privacy filters applied to the task vector, not the weights.

FedBip sites send their FULL federated parameters θ_i (DXO kind WEIGHTS). NVFlare's ``PercentilePrivacy`` and
``SVTPrivacy`` accept WEIGHTS but treat the data as a model difference (divided by the result's
``NUM_STEPS_CURRENT_ROUND``): on θ_i they pick, clip and noise entries by the size of the *weights*, not of the
update. PercentilePrivacy then zeroes the smallest weights (the server sees τ = −θ̄ there) and sends every other
entry's update untouched, and it clips the weights themselves to ±gamma × steps (with steps 1, e.g. a script that
reports none, that wipes out the model); nothing fails, and the protection applies to the wrong quantity.
:class:`TaskVectorPrivacy` runs such a filter on τ_i = θ_i − θ̄_i (kind WEIGHT_DIFF, what the filters are written
for) and sends θ̄_i + τ_i', so the server still receives FULL parameters. It needs the model the site received: the
companion input filter :class:`StashReceivedModel` keeps it for the task; :func:`add_task_vector_privacy` adds both
(NVFlare takes one input-filter chain per task set, so other input filters must use the same tasks)::

    from fedbip_nvflare.client.privacy import add_task_vector_privacy

    add_task_vector_privacy(recipe, "percentile", {"percentile": 10, "gamma": 0.01})

Privacy kinds: ``"percentile"`` (NVFlare ``PercentilePrivacy``), ``"svt"`` (NVFlare ``SVTPrivacy``), ``"gaussian"``
(ours: τ clipped to L2 norm ``clip_norm``, then Gaussian noise of standard deviation ``noise_multiplier × clip_norm``
added to every value, the Gaussian mechanism on the client's update).
"""

import threading
import zlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.constants import FedBipKeys as K

PRIVACY_KINDS = ("percentile", "svt", "gaussian")
_RECEIVED: Dict[tuple, Dict[str, np.ndarray]] = {}  # (job, site, task id) -> the received θ̄_i, in one site process
_LOCK = threading.Lock()


def _task_key(fl_ctx: FLContext) -> tuple:
    return (fl_ctx.get_job_id(), fl_ctx.get_identity_name(), fl_ctx.get_prop(FLContextKey.TASK_ID))


class StashReceivedModel(Filter):
    """Client TASK_DATA filter that keeps the received FULL weights for :class:`TaskVectorPrivacy` (same task).

    The task passes unchanged; the copy is dropped when the task's result filter takes it.
    """

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            return shareable
        if dxo.data_kind == DataKind.WEIGHTS and dxo.data:
            with _LOCK:
                _RECEIVED[_task_key(fl_ctx)] = {
                    n: np.array(v, dtype=np.float32, copy=True) for n, v in dxo.data.items()
                }
        return shareable


class GaussianTaskVectorNoise:
    """The Gaussian mechanism on a task vector: clip to L2 norm ``clip_norm``, add N(0, (σ·clip_norm)²) noise.

    Args:
        clip_norm: L2 bound of the whole task vector (> 0).
        noise_multiplier: σ, noise standard deviation over ``clip_norm`` (>= 0).
        seed: Seed of the noise, combined with the site's name and the round so that no two sites or rounds share
            noise (None: fresh randomness).
    """

    def __init__(self, clip_norm: float = 1.0, noise_multiplier: float = 0.0, seed: Optional[int] = None):
        if isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float)) or not clip_norm > 0:
            raise ValueError(f"clip_norm must be a number > 0, got {clip_norm!r}")
        if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, (int, float)) or noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be a number >= 0, got {noise_multiplier!r}")
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.seed = seed

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO:
        rnd = int(shareable.get_header(AppConstants.CURRENT_ROUND) or 0)
        site = zlib.crc32(fl_ctx.get_identity_name().encode())
        rng = np.random.default_rng(None if self.seed is None else [int(self.seed), site, rnd])
        norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in dxo.data.values())))
        scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        std = self.noise_multiplier * self.clip_norm
        dxo.data = {
            n: (np.asarray(v, dtype=np.float32) * scale + rng.normal(0.0, std, np.shape(v))).astype(np.float32)
            for n, v in dxo.data.items()
        }
        return dxo


def build_privacy(privacy: str, options: Optional[Dict[str, Any]] = None):
    """The privacy filter of a kind (see the module doc), built with ``options``; raises ValueError if unknown."""
    options = dict(options or {})
    if privacy == "percentile":
        from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy

        return PercentilePrivacy(**options)
    if privacy == "svt":
        from nvflare.app_common.filters.svt_privacy import SVTPrivacy

        return SVTPrivacy(**options)
    if privacy == "gaussian":
        return GaussianTaskVectorNoise(**options)
    raise ValueError(f"privacy must be one of {PRIVACY_KINDS}, got {privacy!r}")


class TaskVectorPrivacy(Filter):
    """Client TASK_RESULT filter: a privacy filter applied to τ_i = θ_i − θ̄_i; sends θ̄_i + τ_i' (FULL weights).

    Needs :class:`StashReceivedModel` as a TASK_DATA filter on the same tasks (the received θ̄_i); without it the
    task fails with an error saying so rather than sending unfiltered weights.

    Args:
        privacy: ``"percentile"``, ``"svt"`` or ``"gaussian"``.
        options: Keyword arguments of that filter (e.g. ``{"percentile": 10, "gamma": 0.01}``; for ``"gaussian"``
            ``{"clip_norm", "noise_multiplier", "seed"}``).
    """

    def __init__(self, privacy: str = "percentile", options: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.privacy = privacy
        self.options = dict(options or {})
        self._filter = build_privacy(privacy, self.options)

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if shareable.get_return_code(ReturnCode.OK) != ReturnCode.OK:
            return shareable
        with _LOCK:
            received = _RECEIVED.pop(_task_key(fl_ctx), None)
        dxo = from_shareable(shareable)
        if dxo.data_kind != DataKind.WEIGHTS:
            raise ValueError(f"TaskVectorPrivacy expects a FULL result (WEIGHTS), got {dxo.data_kind}")
        if received is None or set(received) - set(dxo.data):
            raise RuntimeError(
                "TaskVectorPrivacy has no received model for this task: add StashReceivedModel as a task data "
                "filter on the same tasks (fedbip_nvflare.client.privacy.add_task_vector_privacy adds both)"
            )
        names = [n for n in dxo.data if n in received]  # a site-joined head (not sent) passes unfiltered
        diff = DXO(
            data_kind=DataKind.WEIGHT_DIFF,
            data={n: np.asarray(dxo.data[n], dtype=np.float32) - received[n] for n in names},
            meta=dict(dxo.meta),
        )
        filtered = self._filter.process_dxo(diff, shareable, fl_ctx) or diff
        data = dict(dxo.data)
        data.update({n: (received[n] + np.asarray(filtered.data[n], dtype=np.float32)) for n in names})
        self.log_info(fl_ctx, f"{self.privacy} privacy applied to the task vector of {len(names)} tensors")
        return DXO(data_kind=DataKind.WEIGHTS, data=data, meta=dict(dxo.meta)).update_shareable(shareable)


def add_task_vector_privacy(
    recipe,
    privacy: str,
    options: Optional[Dict[str, Any]] = None,
    tasks: Sequence[str] = (K.TRAIN_TASK,),
    clients: Optional[List[str]] = None,
) -> None:
    """Adds :class:`StashReceivedModel` (task data) and :class:`TaskVectorPrivacy` (results) to a recipe's sites."""
    recipe.add_client_input_filter(StashReceivedModel(), tasks=list(tasks), clients=clients)
    recipe.add_client_output_filter(TaskVectorPrivacy(privacy, options), tasks=list(tasks), clients=clients)
