"""Privacy filters on FedBip results: NVFlare's filters damage FULL weights; TaskVectorPrivacy filters τ instead."""

import numpy as np
import pytest
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy

from fedbip_nvflare.client.privacy import StashReceivedModel, TaskVectorPrivacy, build_privacy


class _Ctx(FLContext):
    def __init__(self, site="site-1", task_id="t1"):
        super().__init__()
        self._site = site
        self.set_prop(FLContextKey.TASK_ID, task_id, private=True, sticky=False)

    def get_identity_name(self, default=""):
        return self._site

    def get_job_id(self):
        return "job"


def _models(seed=0):
    rng = np.random.default_rng(seed)
    received = {
        "a.lora_A.weight": rng.uniform(-0.1, 0.1, (8, 16)).astype(np.float32),
        "a.lora_B.weight": rng.normal(0, 0.01, (16, 8)).astype(np.float32),
    }
    tau = {n: rng.normal(0, 1e-3, v.shape).astype(np.float32) for n, v in received.items()}
    return received, tau


def _norm(params):
    return float(np.sqrt(sum(float(np.sum(np.square(v))) for v in params.values())))


def _run(filter_, received, tau, ctx):
    StashReceivedModel().process(DXO(DataKind.WEIGHTS, data=received).to_shareable(), ctx)
    result = DXO(DataKind.WEIGHTS, data={n: received[n] + tau[n] for n in received}).to_shareable()
    out = from_shareable(filter_.process(result, ctx))
    assert out.data_kind == DataKind.WEIGHTS
    return {n: out.data[n] - received[n] for n in received}


def _percentile_on_weights(received, tau, steps):
    dxo = DXO(DataKind.WEIGHTS, data={n: received[n] + tau[n] for n in received})
    if steps is not None:
        dxo.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, steps)
    out = from_shareable(PercentilePrivacy(percentile=10, gamma=0.01).process(dxo.to_shareable(), _Ctx()))
    return {n: out.data[n] - received[n] for n in received}


def test_nvflares_percentile_filter_on_full_weights_selects_by_weight_not_update():
    received, tau = _models()
    server_tau = _percentile_on_weights(received, tau, steps=64)  # FedBipExecutor reports its examples as steps
    theta = np.concatenate([(received[n] + tau[n]).ravel() for n in tau])
    changed = np.concatenate([(np.abs(server_tau[n] - tau[n]) > 1e-6).ravel() for n in tau])  # beyond float32 roundoff
    smallest_weights = np.abs(theta) < np.percentile(np.abs(theta), 10)
    assert np.array_equal(changed, smallest_weights), "entries are picked by the weights' size"
    assert 0.05 < changed.mean() < 0.15
    flat_received = np.concatenate([received[n].ravel() for n in tau])
    flat_server = np.concatenate([server_tau[n].ravel() for n in tau])
    np.testing.assert_allclose(flat_server[changed], -flat_received[changed], atol=1e-7)  # θ zeroed: τ = −θ̄
    # the smallest updates, which the filter exists to withhold, go out: no protection of the update
    flat_tau = np.concatenate([tau[n].ravel() for n in tau])
    smallest_updates = np.abs(flat_tau) < np.percentile(np.abs(flat_tau), 10)
    assert (~changed[smallest_updates]).mean() > 0.5


def test_nvflares_percentile_filter_on_full_weights_without_steps_destroys_the_model():
    received, tau = _models()
    server_tau = _percentile_on_weights(received, tau, steps=None)  # gamma then clips the weights to ±0.01
    assert _norm({n: server_tau[n] - tau[n] for n in tau}) > 5 * _norm(tau)


def test_task_vector_privacy_applies_the_percentile_filter_to_tau():
    received, tau = _models()
    gamma = 2e-3
    sent = _run(TaskVectorPrivacy("percentile", {"percentile": 50, "gamma": gamma}), received, tau, _Ctx())
    flat_tau = np.concatenate([tau[n].ravel() for n in tau])
    flat_sent = np.concatenate([sent[n].ravel() for n in tau])
    cutoff = np.percentile(np.abs(flat_tau), 50)
    small = np.abs(flat_tau) < cutoff
    assert np.all(flat_sent[small] == 0), "entries under the percentile are not shared"
    np.testing.assert_allclose(flat_sent[~small], np.clip(flat_tau[~small], -gamma, gamma), atol=1e-6)
    assert 0.3 < np.mean(small) < 0.7


def test_gaussian_privacy_clips_tau_and_adds_noise_of_the_chosen_scale():
    received, tau = _models()
    clip = 0.5 * _norm(tau)
    sent = _run(TaskVectorPrivacy("gaussian", {"clip_norm": clip}), received, tau, _Ctx(task_id="a"))
    assert _norm(sent) == pytest.approx(clip, rel=1e-4)
    noisy = _run(
        TaskVectorPrivacy("gaussian", {"clip_norm": clip, "noise_multiplier": 0.1, "seed": 0}),
        received,
        tau,
        _Ctx(task_id="b"),
    )
    residual = np.concatenate([(noisy[n] - sent[n]).ravel() for n in tau])
    assert residual.std() == pytest.approx(0.1 * clip, rel=0.15)


def test_without_the_stash_the_task_fails_instead_of_sending_unfiltered_weights():
    received, tau = _models()
    result = DXO(DataKind.WEIGHTS, data={n: received[n] + tau[n] for n in received}).to_shareable()
    with pytest.raises(RuntimeError, match="StashReceivedModel"):
        TaskVectorPrivacy("svt").process(result, _Ctx(task_id="nothing-stashed"))


def test_unknown_privacy_kinds_and_bad_gaussian_options_are_refused():
    with pytest.raises(ValueError, match="privacy must be one of"):
        build_privacy("laplace")
    with pytest.raises(ValueError, match="clip_norm"):
        build_privacy("gaussian", {"clip_norm": 0})
