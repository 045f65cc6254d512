"""A tiny real FedBip job on a generative LLM in NVFlare's simulator (SimEnv): the offline SmolLM2 GGUF, causal-lm."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from fedbip_nvflare.constants import FedBipKeys as K
from fedbip_nvflare.data.instruct_suite import INSTRUCT_TASKS
from fedbip_nvflare.models import LoraSettings, adapter_shapes
from fedbip_nvflare.models.causal_lm import DEFAULT_CAUSAL_LM, DEFAULT_CAUSAL_LM_TARGETS
from fedbip_nvflare.server.state import ClientStateStore

CLIENTS = ["site-1", "site-2"]
LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    from nvflare.recipe.sim_env import SimEnv

    from fedbip_nvflare import assets
    from fedbip_nvflare.recipes import FedBipRecipe

    if assets.model_path(DEFAULT_CAUSAL_LM) is None:
        pytest.fail("offline SmolLM2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    workspace = str(tmp_path_factory.mktemp("simenv_llm"))
    recipe = FedBipRecipe(
        name="fedbip_llm_it",
        modality="causal-lm",
        model=DEFAULT_CAUSAL_LM,
        num_rounds=1,
        min_clients=2,
        data={"suite": "instruct-tasks", "n_train": 4, "n_test": 2, "seed": 0, "max_input_words": 12},
        batch_size=4,
        learning_rate=5e-3,
        max_length=64,
        max_new_tokens=3,
        num_threads=1,
        log_updates=True,
        **LORA,
    )
    recipe.execute(SimEnv(num_clients=2, num_threads=2, workspace_root=workspace))
    return os.path.join(workspace, "fedbip_llm_it", "server", "simulate_job", K.STATE_DIR)


def _results(server_dir):
    with open(os.path.join(server_dir, K.RESULTS_FILE)) as f:
        return json.load(f)["clients"]


def test_every_client_generated_and_was_scored(finished_job):
    clients = _results(finished_job)
    assert sorted(clients) == CLIENTS
    assert [clients[c]["task"] for c in CLIENTS] == INSTRUCT_TASKS[:2]
    for info in clients.values():
        assert info["n_train"] == 4 and info["n_test"] == 2
        assert 0.0 <= info["accuracy"] <= 1.0 and 0.0 <= info["accuracy_before"] <= 1.0
        (round0,) = info["history"]
        assert 0.0 <= round0["rouge_l_received"] <= 1.0 and 0.0 <= round0["rouge_l_local"] <= 1.0
        assert round0["train_loss"] > 0 and round0["n_examples"] == 4
        with open(os.path.join(info["adapter_dir"], "generation.json")) as f:
            generation = json.load(f)
        assert generation["base_model"] == DEFAULT_CAUSAL_LM and generation["gguf_file"].endswith(".gguf")
        assert generation["last_evaluation"]["n_examples"] == 2
        assert generation["last_evaluation"]["exact_match"] == info["accuracy"]


def test_every_lora_tensor_travels_and_matches_the_sites_adapter(finished_job):
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=DEFAULT_CAUSAL_LM_TARGETS)
    expected = adapter_shapes(DEFAULT_CAUSAL_LM, lora, modality="causal-lm")
    folder = os.path.join(finished_job, "updates", "round_000")
    for site in CLIENTS:
        for kind in ("sent", "returned"):
            tensors = load_file(os.path.join(folder, f"{kind}_" + ClientStateStore.file_name(site)))
            assert {n: tuple(t.shape) for n, t in tensors.items()} == expected
        sent = load_file(os.path.join(folder, "sent_" + ClientStateStore.file_name(site)))
        returned = load_file(os.path.join(folder, "returned_" + ClientStateStore.file_name(site)))
        assert any(not torch.equal(sent[n], returned[n]) for n in sent), f"{site} returned an untrained adapter"


def test_personalized_adapters_differ_and_equal_the_servers_state(finished_job):
    clients = _results(finished_job)
    _, theta0, final, _ = ClientStateStore(os.path.join(finished_job, "state")).load()
    saved = {}
    for site in CLIENTS:
        saved[site] = load_file(os.path.join(clients[site]["adapter_dir"], "adapter_model.safetensors"))
        assert set(saved[site]) == set(theta0)
        for name, tensor in final[site].items():
            torch.testing.assert_close(saved[site][name].float(), tensor, rtol=0, atol=1e-7)
    diff = max(float((saved["site-1"][n] - saved["site-2"][n]).abs().max()) for n in theta0)
    assert diff > 1e-6, "the two clients got identical personalized adapters"
