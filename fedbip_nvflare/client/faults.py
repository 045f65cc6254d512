"""FaultInjector: a chaos-testing filter that makes chosen sites fail in chosen rounds of a real NVFlare job.

It is a client TASK_RESULT filter, so it runs in the site's own process after the site trained, on the result the
site is about to send. Attach it through the Recipe API (NVFlare 2.9)::

    from fedbip_nvflare.client.faults import FaultInjector

    recipe.add_client_output_filter(
        FaultInjector(faults=[{"site": "site-2", "round": 0, "kind": "raise"},
                              {"site": "site-3", "round": 1, "kind": "nan"}]),
        tasks=["train"],
    )

or in an exported job's ``config_fed_client.json`` under ``task_result_filters`` with the path
``fedbip_nvflare.client.faults.FaultInjector`` (allow-listed with the rest of the package by ``fedbip allow-list``).
A testing tool only: never deploy it in a production job.
"""

import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from nvflare.apis.dxo import DXO, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FLContextKey, ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

# kind -> what the site does instead of sending its normal result
FAULT_KINDS: Dict[str, str] = {
    "raise": "the result filter raises: the site answers with an error code instead of a result",
    "crash": "the site's client process exits at once (os._exit), without answering",
    "timeout": "the site sleeps sleep_s seconds before answering (set it past the job's train_timeout)",
    "nan": "one value of the first tensor becomes NaN",
    "inf": "one value of the first tensor becomes +Inf",
    "wrong-shape": "the first tensor loses its last column",
    "wrong-dtype": "the first tensor is sent as int32",
    "missing-tensor": "the first tensor is left out",
    "extra-tensor": "a tensor the server never sent is added",
    "absurd-norm": "every tensor is multiplied by scale (finite, but an outsized update)",
}
_BEHAVIOURS = ("raise", "crash", "timeout")  # kinds that are not a data corruption
EXTRA_TENSOR = "injected_fault.extra.weight"
INJECTED = "injected fault"


def validate_faults(faults: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Checks a fault plan and returns it as a list of ``{"site", "round", "kind"}`` dicts.

    Args:
        faults: Entries ``{"site": name, "round": int >= 0 or None (every round), "kind": one of FAULT_KINDS}``.

    Raises:
        ValueError: An entry is not such a dict, names an unknown kind, or two entries hit the same site and round.
    """
    if isinstance(faults, (str, bytes)) or not isinstance(faults, (list, tuple)):
        raise ValueError(f"faults must be a list of {{'site', 'round', 'kind'}} dicts, got {faults!r}")
    plan, seen = [], set()
    for entry in faults:
        if not isinstance(entry, dict) or set(entry) - {"site", "round", "kind"} or "site" not in entry:
            raise ValueError(f"each fault must be a dict with keys 'site', 'round', 'kind', got {entry!r}")
        site, rnd, kind = entry["site"], entry.get("round"), entry.get("kind")
        if not isinstance(site, str) or not site:
            raise ValueError(f"fault {entry!r}: 'site' must be a site name")
        if rnd is not None and (not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0):
            raise ValueError(f"fault {entry!r}: 'round' must be an int >= 0 or None (every round)")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault {entry!r}: 'kind' must be one of {sorted(FAULT_KINDS)}")
        if (site, rnd) in seen:
            raise ValueError(f"two faults for {site} in round {rnd}: give each site one fault per round")
        seen.add((site, rnd))
        plan.append({"site": site, "round": rnd, "kind": kind})
    return plan


def corrupt(params: Dict[str, Any], kind: str, scale: float = 1e6) -> Dict[str, Any]:
    """A corrupted copy of a result's tensors (numpy arrays or array-likes); ``params`` is not changed.

    Args:
        params: ``{name: array}`` as a site sends it.
        kind: One of the data kinds of :data:`FAULT_KINDS` (``nan``, ``inf``, ``wrong-shape``, ``wrong-dtype``,
            ``missing-tensor``, ``extra-tensor``, ``absurd-norm``).
        scale: Factor of ``absurd-norm``.

    Raises:
        ValueError: An unknown or non-data kind, or an empty result.
    """
    if not params:
        raise ValueError("cannot corrupt an empty result")
    out = {n: np.array(v, copy=True) for n, v in params.items()}
    first = next(iter(out))
    if kind in ("nan", "inf"):
        out[first] = out[first].astype(np.float32)
        out[first].reshape(-1)[0] = np.nan if kind == "nan" else np.inf
    elif kind == "wrong-shape":
        out[first] = out[first][..., :-1] if out[first].ndim else out[first].reshape(1, 1)
    elif kind == "wrong-dtype":
        out[first] = out[first].astype(np.int32)
    elif kind == "missing-tensor":
        del out[first]
    elif kind == "extra-tensor":
        out[EXTRA_TENSOR] = np.zeros((2, 2), dtype=np.float32)
    elif kind == "absurd-norm":
        out = {n: (v * np.float32(scale)).astype(v.dtype) for n, v in out.items()}
    else:
        raise ValueError(
            f"{kind!r} is not a data corruption; data kinds: {sorted(set(FAULT_KINDS) - set(_BEHAVIOURS))}"
        )
    return out


class FaultInjector(Filter):
    """Client TASK_RESULT filter that injects the planned fault into a site's result (chaos testing only).

    For the site and round of a plan entry it does what :data:`FAULT_KINDS` says: raise, exit the client process,
    sleep, or send a corrupted copy of the result. It logs a warning naming the site, round and fault first (the
    site's log then shows what was injected). Results of other sites, other rounds, and error replies pass
    unchanged. The round is the result's ``current_round`` header (the task's round).

    Args:
        faults: The plan: ``[{"site": "site-2", "round": 0, "kind": "raise"}, ...]``; ``round`` None means every
            round. One fault per site and round.
        sleep_s: Seconds a ``timeout`` fault sleeps (make it longer than the job's ``train_timeout``).
        scale: Factor an ``absurd-norm`` fault multiplies every tensor by.
        exit_code: Exit status of the process a ``crash`` fault ends.
    """

    def __init__(self, faults: Sequence[Dict[str, Any]], sleep_s: float = 0.0, scale: float = 1e6, exit_code: int = 17):
        super().__init__()
        self.faults = validate_faults(faults)
        self.sleep_s = sleep_s
        self.scale = scale
        self.exit_code = exit_code
        if isinstance(sleep_s, bool) or not isinstance(sleep_s, (int, float)) or sleep_s < 0:
            raise ValueError(f"sleep_s must be a number of seconds >= 0, got {sleep_s!r}")
        if any(f["kind"] == "timeout" for f in self.faults) and not sleep_s > 0:
            raise ValueError("a 'timeout' fault needs sleep_s > 0 (longer than the job's train_timeout)")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale == 0:
            raise ValueError(f"scale must be a finite non-zero number, got {scale!r}")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise ValueError(f"exit_code must be an int, got {exit_code!r}")

    def fault_for(self, site: str, rnd: Optional[int]) -> Optional[str]:
        """The kind planned for ``site`` in round ``rnd`` (an exact round wins over an every-round entry)."""
        exact = [f["kind"] for f in self.faults if f["site"] == site and f["round"] is not None and f["round"] == rnd]
        every = [f["kind"] for f in self.faults if f["site"] == site and f["round"] is None]
        return (exact or every or [None])[0]

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if shareable.get_return_code(ReturnCode.OK) != ReturnCode.OK:
            return shareable
        site = fl_ctx.get_identity_name()
        rnd = shareable.get_header(AppConstants.CURRENT_ROUND)
        if rnd is None:
            rnd = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
        rnd = None if rnd is None else int(rnd)
        kind = self.fault_for(site, rnd)
        if kind is None:
            return shareable
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME) or shareable.get_header(ReservedKey.TASK_NAME)
        self.log_warning(fl_ctx, f"{INJECTED}: {kind} into {site}'s {task} result of round {rnd}")
        if kind == "raise":
            raise RuntimeError(f"{INJECTED}: {site} fails its {task} task of round {rnd}")
        if kind == "crash":
            logging.shutdown()  # flush the site's log before the process disappears
            os._exit(self.exit_code)
        if kind == "timeout":
            time.sleep(self.sleep_s)
            return shareable
        dxo = from_shareable(shareable)
        corrupted = DXO(data_kind=dxo.data_kind, data=corrupt(dxo.data, kind, self.scale), meta=dict(dxo.meta))
        return corrupted.update_shareable(shareable)
