"""ReceivedModelLog: a site-side record of every model the site received (for audits and privacy tests)."""

import json
import os
import threading
from typing import Optional

from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.core import params_digest

RECEIVED_FILE = "received.jsonl"


class ReceivedModelLog(Filter):
    """Client TASK_DATA filter that appends a fingerprint of every received model to the site's run folder.

    Each line of ``<site run dir>/fedbip/received.jsonl`` is ``{"site", "task", "round", "digest", "tensors"}``,
    the digest being :func:`fedbip_nvflare.core.params_digest` of the received weights; the task passes
    unchanged. A site admin adds it to audit what the server sent (nothing but fingerprints is stored).

    Args:
        file_name: Name of the log file in ``<run dir>/fedbip``.
    """

    def __init__(self, file_name: str = RECEIVED_FILE):
        super().__init__()
        self.file_name = file_name
        self._lock = threading.Lock()

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            return shareable  # a task without a model
        if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF) or not dxo.data:
            return shareable
        rnd: Optional[int] = shareable.get_header(AppConstants.CURRENT_ROUND)
        entry = {
            "site": fl_ctx.get_identity_name(),
            "task": fl_ctx.get_prop(FLContextKey.TASK_NAME) or shareable.get_header(ReservedKey.TASK_NAME),
            "round": None if rnd is None else int(rnd),
            "digest": params_digest(dxo.data),
            "tensors": len(dxo.data),
        }
        run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
        folder = os.path.join(run_dir, K.STATE_DIR)
        with self._lock:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, self.file_name), "a") as f:
                f.write(json.dumps(entry) + "\n")
        return shareable
