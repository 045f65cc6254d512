"""The received-model audit on hand-made run folders: who sent what to whom, and resumed jobs' first round."""

import json
import os
from typing import Dict, List

import pytest
import torch

from fedbip_nvflare.client.audit import RECEIVED_FILE, SENT_FILE, exchange_log, received_model_problems
from fedbip_nvflare.core import params_digest
from fedbip_nvflare.state_files import ClientStateStore, save_round_updates

SITES = ["site-1", "site-2"]


def _params(value: float) -> Dict[str, torch.Tensor]:
    return {"lora_A": torch.full((2, 3), value), "lora_B": torch.full((3, 2), -value)}


def _log(run_dir: str, file_name: str, site: str, entries: List[tuple]) -> None:
    folder = os.path.join(run_dir, "fedbip")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, file_name), "w") as f:
        for task, rnd, params in entries:
            f.write(json.dumps({"site": site, "task": task, "round": rnd, "digest": params_digest(params)}) + "\n")


def _job(tmp_path, first_round: int = 0, rounds: int = 2):
    """A server run folder and site run folders of a job whose rounds ``first_round..rounds-1`` all went well."""
    server = str(tmp_path / "server")
    sites = {s: str(tmp_path / s) for s in SITES}
    sent = {(s, r): _params(10 * r + k) for r in range(first_round, rounds) for k, s in enumerate(SITES, 1)}
    returned = {key: {n: t + 0.5 for n, t in params.items()} for key, params in sent.items()}
    for r in range(first_round, rounds):
        save_round_updates(
            os.path.join(server, "fedbip"),
            r,
            {s: sent[s, r] for s in SITES},
            {s: returned[s, r] for s in SITES},
        )
    final = {s: _params(100 + k) for k, s in enumerate(SITES, 1)}
    ClientStateStore(os.path.join(server, "fedbip", "state")).save(rounds - 1, _params(0), final)
    for s in SITES:
        got = [("train", r, sent[s, r]) for r in range(first_round, rounds)] + [("validate", rounds, final[s])]
        _log(sites[s], RECEIVED_FILE, s, got)
        _log(sites[s], SENT_FILE, s, [("train", r, returned[s, r]) for r in range(first_round, rounds)])
    return server, sites, sent, final


def test_exchange_log_shows_each_model_from_both_ends(tmp_path):
    server, sites, sent, final = _job(tmp_path)
    lines = exchange_log(server, sites, server="fedbip-server")
    assert len(lines) == len(SITES) * (2 * 2 + 1)
    assert all(line.endswith(": same") for line in lines), lines
    digest = params_digest(sent["site-2", 1])[:12]
    assert f"round 1 train    fedbip-server -> site-2        {digest}  site-2 logged {digest}: same" in lines
    assert lines[-1].startswith("round 2 validate fedbip-server -> site-2")
    assert params_digest(final["site-2"])[:12] in lines[-1]


def test_exchange_log_shows_a_mismatch_and_a_lost_model(tmp_path):
    server, sites, sent, _ = _job(tmp_path)
    _log(sites["site-1"], RECEIVED_FILE, "site-1", [("train", 0, _params(-1)), ("train", 1, sent["site-1", 1])])
    lines = exchange_log(server, sites)
    assert any(line.startswith("round 0 train           server -> site-1") and "DIFFERENT" in line for line in lines)
    # site-1 logged no final model: the server's record stands alone
    assert any(line.startswith("round 2 validate        server -> site-1") and "no record" in line for line in lines)


def test_received_model_problems_of_a_resumed_job_start_at_its_first_round(tmp_path):
    server, sites, _, _ = _job(tmp_path, first_round=2, rounds=3)
    assert received_model_problems(server, sites, rounds=3, first_round=2) == []
    with pytest.raises(FileNotFoundError, match="round_000"):  # this job never ran rounds 0 and 1
        received_model_problems(server, sites, rounds=3)


def test_received_model_problems_name_a_site_that_got_another_sites_model(tmp_path):
    server, sites, sent, final = _job(tmp_path)
    _log(
        sites["site-1"],
        RECEIVED_FILE,
        "site-1",
        [("train", 0, sent["site-1", 0]), ("train", 1, sent["site-2", 1]), ("validate", 2, final["site-1"])],
    )
    problems = received_model_problems(server, sites, rounds=2)
    assert problems == ["site-1 received a model that is not its own at ('train', 1)"]
