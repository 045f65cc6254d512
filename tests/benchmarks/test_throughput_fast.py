"""The throughput benchmark's command in a tiny configuration: it trains what it counts, on one loaded model.

No timing is asserted (timings depend on the machine); only that the numbers are real and the hot path is right.
"""

import json
import math
import os

import pytest

N_TRAIN = 6
ROUNDS = 3
TINY = [
    "--n-train",
    str(N_TRAIN),
    "--rounds",
    str(ROUNDS),
    "--batch-size",
    "4",
    "--max-lengths",
    "16",
    "--threads",
    "1",
    "--devices",
    "cpu",
]


def _count_model_loads(mp: pytest.MonkeyPatch) -> list:
    """Makes the client's model builder record each call; returns the record."""
    import fedbip_nvflare.client.trainer as trainer_module

    loads = []
    build = trainer_module.build_text_classifier

    def counting_build(*args, **kwargs):
        loads.append(args[0])
        return build(*args, **kwargs)

    mp.setattr(trainer_module, "build_text_classifier", counting_build)
    return loads


@pytest.fixture(scope="module")
def throughput_run(tmp_path_factory, minilm_path):
    """Runs the command in-process, counting how often the client builds its model."""
    from benchmarks import throughput

    output = str(tmp_path_factory.mktemp("throughput"))
    with pytest.MonkeyPatch.context() as mp:
        loads = _count_model_loads(mp)
        code = throughput.main([*TINY, "--precisions", "fp32", "bf16", "--output", output])
    assert code == 0
    with open(os.path.join(output, throughput.JSON_FILE)) as f:
        info = json.load(f)
    return info, loads, output


def test_each_configuration_loads_its_model_once_and_keeps_it_across_rounds(throughput_run):
    info, loads, _ = throughput_run
    results = info["results"]
    assert [(r["config"]["precision"], r["status"]) for r in results] == [("fp32", "ok"), ("bf16", "ok")]
    assert len(loads) == len(results), "one model load per configuration, none per round"
    for r in results:
        assert len(r["rounds"]) == ROUNDS
        assert r["same_model"] and all(rnd["same_model"] for rnd in r["rounds"])
        assert r["frozen_unchanged"], "a frozen pre-trained weight must keep its storage across rounds"


def test_examples_per_s_counts_the_examples_actually_trained(throughput_run):
    info, _, _ = throughput_run
    for r in info["results"]:
        for rnd in r["rounds"]:
            assert rnd["examples_counted"] == rnd["n_examples"] == N_TRAIN
            for key in ("examples_per_s", "trainer_examples_per_s", "train_s", "receive_s", "export_s"):
                assert math.isfinite(rnd[key]) and rnd[key] > 0, key
            assert math.isfinite(rnd["train_loss"])
        assert math.isfinite(r["examples_per_s"]) and r["examples_per_s"] > 0
        assert r["load_s"] > 0 and r["mean_tokens"] <= 16
    assert info["results"][0]["rounds"][0]["train_loss"] != info["results"][0]["rounds"][1]["train_loss"]


def test_bf16_runs_under_autocast_and_fp32_does_not(throughput_run):
    info, _, _ = throughput_run
    assert [r["logits_dtype"] for r in info["results"]] == ["float32", "bfloat16"]


def test_files_hold_settings_environment_and_the_table(throughput_run):
    info, _, output = throughput_run
    assert info["settings"]["rounds"] == ROUNDS and info["settings"]["batch_size"] == 4
    env = info["environment"]
    assert env["torch"] and env["cpu_count"] >= 1 and "git_commit" in info and info["machine"]["cpus"] >= 1
    with open(os.path.join(output, "throughput.md")) as f:
        table = f.read()
    assert "| cpu | fp32 | 16 | 1 |" in table and "| cpu | bf16 | 16 | 1 |" in table


def test_precision_setting_is_validated():
    from fedbip_nvflare.client import TrainSettings

    with pytest.raises(ValueError, match="precision"):
        TrainSettings(precision="fp8")


def test_a_site_session_loads_its_model_once_across_rounds(tmp_path, minilm_path, monkeypatch):
    from fedbip_nvflare.client import SiteSession, TrainSettings
    from fedbip_nvflare.constants import FedBipKeys as K
    from fedbip_nvflare.models import LoraSettings, initial_adapter

    loads = _count_model_loads(monkeypatch)
    data = {"suite": "text-tasks", "n_train": N_TRAIN, "n_test": 2, "seed": 0}
    settings = TrainSettings(batch_size=4, max_length=16, num_threads=1)
    site = SiteSession("site-1", str(tmp_path), minilm_path, data, LoraSettings(), settings)
    model = site.trainer.model
    frozen = model.backbone.base_model.model.embeddings.word_embeddings.weight
    params = {n: t.numpy() for n, t in initial_adapter(minilm_path, LoraSettings(), seed=0).items()}
    for rnd in range(ROUNDS):
        params, metrics, _ = site.train(params, current_round=rnd)
        assert metrics[K.N_EXAMPLES] == N_TRAIN
    assert len(loads) == 1 and site.trainer.model is model
    assert site.trainer.model.backbone.base_model.model.embeddings.word_embeddings.weight is frozen
