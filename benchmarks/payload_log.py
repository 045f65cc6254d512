"""PayloadSizeLog: a client-side NVFlare filter that records the serialized size of every task in and result out.

Used by ``benchmarks.end_to_end`` (attached like ``fedbip_nvflare.client.audit.ReceivedModelLog``, with
``recipe.add_client_input_filter`` / ``recipe.add_client_output_filter``). This module imports only NVFlare and the
standard library: FedJob ships it to the sites as the job's custom code.
"""

import json
import os
import threading
import time
from typing import Any, Dict, Optional

import numpy as np
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReservedHeaderKey, Shareable
from nvflare.app_common.app_constant import AppConstants
from nvflare.fuel.utils import fobs

PAYLOAD_FILE = "payload_bytes.jsonl"
DIRECTIONS = ("in", "out")
_DXO_KEY = "DXO"  # where nvflare.apis.dxo.DXO.to_shareable puts the DXO


def _register_decomposers() -> None:
    """FOBS needs the app decomposers (numpy arrays, FLModel); NVFlare's site processes register them too."""
    from nvflare.app_common.decomposers import common_decomposers

    common_decomposers.register()


def _size(value: Any) -> int:
    return len(fobs.dumps(value)) if value is not None else 0


def payload_sizes(shareable: Shareable) -> Dict[str, Any]:
    """The serialized size of a task's Shareable and of its parts.

    Args:
        shareable: A task's data or result, as the site's filters see it.

    Returns:
        ``{"bytes": len(fobs.dumps(shareable)), "data_bytes", "meta_bytes", "header_bytes"}`` (each part serialized
        on its own: the DXO's data, the DXO's meta, the Shareable's headers), ``"raw_bytes"`` (the ``nbytes`` of
        the numpy arrays in the DXO's data), ``"tensors"`` (how many) and the sorted ``"meta_keys"`` and
        ``"header_keys"`` (to explain a size difference).
    """
    _register_decomposers()
    dxo = shareable.get(_DXO_KEY) if isinstance(shareable.get(_DXO_KEY), dict) else {}
    data = dxo.get("data") or {}
    arrays = [v for v in data.values() if isinstance(v, np.ndarray)] if isinstance(data, dict) else []
    headers = shareable.get(ReservedHeaderKey.HEADERS) or {}
    meta = dxo.get("meta") or {}
    return {
        "bytes": len(fobs.dumps(shareable)),
        "data_bytes": _size(dxo.get("data")),
        "meta_bytes": _size(dxo.get("meta")),
        "header_bytes": _size(headers),
        "raw_bytes": int(sum(a.nbytes for a in arrays)),
        "tensors": len(arrays),
        "meta_keys": sorted(map(str, meta)),
        "header_keys": sorted(map(str, headers)),
    }


class PayloadSizeLog(Filter):
    """Client filter that appends one line per task in (TASK_DATA) or result out (TASK_RESULT) to a JSONL file.

    Each line of ``<site run dir>/payload_bytes.jsonl`` is ``{"site", "task", "round", "direction", "time",
    **payload_sizes(shareable)}``; ``time`` is ``time.time()`` when the filter ran. The Shareable passes unchanged.
    Attach it as the first task-data filter and the last task-result filter, so it sees what crossed the wire.

    Args:
        direction: ``"in"`` (a task-data filter) or ``"out"`` (a task-result filter).
        file_name: Name of the log file in the site's run folder.
    """

    def __init__(self, direction: str = "in", file_name: str = PAYLOAD_FILE):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.file_name = file_name
        self._lock = threading.Lock()

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        """Records the Shareable's serialized size and returns it unchanged."""
        stamp = time.time()
        try:
            sizes = payload_sizes(shareable)
        except Exception as e:  # noqa: BLE001 - a measurement must never fail the task
            self.log_error(fl_ctx, f"cannot serialize the {self.direction} payload: {type(e).__name__}: {e}")
            return shareable
        rnd: Optional[Any] = shareable.get_header(AppConstants.CURRENT_ROUND)
        entry = {
            "site": fl_ctx.get_identity_name(),
            "task": fl_ctx.get_prop(FLContextKey.TASK_NAME) or shareable.get_header(ReservedKey.TASK_NAME),
            "round": None if rnd is None else int(rnd),
            "direction": self.direction,
            "time": stamp,
            **sizes,
        }
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
        with self._lock:
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(run_dir, self.file_name), "a") as f:
                f.write(json.dumps(entry) + "\n")
        return shareable
