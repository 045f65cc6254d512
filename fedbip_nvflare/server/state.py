"""Per-client server state (θ̄⁰ and every θ̄_i): the state files of :mod:`fedbip_nvflare.state_files`."""

from fedbip_nvflare.state_files import (
    INITIAL_FILE,
    STATE_FILE,
    UPDATES_DIR,
    ClientStateStore,
    Params,
    run_key_from,
    save_round_updates,
)

__all__ = [
    "INITIAL_FILE",
    "STATE_FILE",
    "UPDATES_DIR",
    "ClientStateStore",
    "Params",
    "run_key_from",
    "save_round_updates",
]
