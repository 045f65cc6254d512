"""What each site received in a real job (its ReceivedModelLog) against what the server sent it (log_updates)."""

import os
from typing import Dict

from safetensors.torch import load_file

from fedbip_nvflare.client.audit import received_log, received_model_problems
from fedbip_nvflare.server.state import ClientStateStore

received = received_log


def sent_model(server_run_dir: str, rnd: int, site: str):
    folder = os.path.join(server_run_dir, "fedbip", "updates", f"round_{rnd:03d}")
    return load_file(os.path.join(folder, "sent_" + ClientStateStore.file_name(site)))


def final_models(server_run_dir: str) -> Dict[str, dict]:
    _, _, thetas, _ = ClientStateStore(os.path.join(server_run_dir, "fedbip", "state")).load()
    return thetas


def assert_each_site_received_only_its_own(server_run_dir: str, site_run_dirs: Dict[str, str], rounds: int):
    problems = received_model_problems(server_run_dir, site_run_dirs, rounds)
    assert not problems, problems
