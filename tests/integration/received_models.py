"""What each site received in a real job (its ReceivedModelLog) against what the server sent it (log_updates)."""

import json
import os
from typing import Dict, List

from safetensors.torch import load_file

from fedbip_nvflare.core import params_digest
from fedbip_nvflare.server.state import ClientStateStore


def received(site_run_dir: str) -> List[dict]:
    with open(os.path.join(site_run_dir, "fedbip", "received.jsonl")) as f:
        return [json.loads(line) for line in f]


def sent_model(server_run_dir: str, rnd: int, site: str):
    folder = os.path.join(server_run_dir, "fedbip", "updates", f"round_{rnd:03d}")
    return load_file(os.path.join(folder, "sent_" + ClientStateStore.file_name(site)))


def final_models(server_run_dir: str) -> Dict[str, dict]:
    _, _, thetas, _ = ClientStateStore(os.path.join(server_run_dir, "fedbip", "state")).load()
    return thetas


def assert_each_site_received_only_its_own(server_run_dir: str, site_run_dirs: Dict[str, str], rounds: int):
    final = final_models(server_run_dir)
    own = {
        site: {("train", r): params_digest(sent_model(server_run_dir, r, site)) for r in range(rounds)}
        | {("validate", rounds): params_digest(final[site])}
        for site in site_run_dirs
    }
    for site, run_dir in site_run_dirs.items():
        entries = received(run_dir)
        assert sorted((e["task"], e["round"]) for e in entries) == sorted(own[site]), entries
        for e in entries:
            key = (e["task"], e["round"])
            assert e["site"] == site and e["digest"] == own[site][key], f"{site} got a model not its own at {key}"
            if key[1] > 0:  # after round 0 every client's model differs: it never matches another's
                assert all(e["digest"] != own[other][key] for other in site_run_dirs if other != site)
