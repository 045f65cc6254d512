"""Baseline weighting rules: Local, ground-truth groups, FedAMP."""

import math

import pytest
import torch

from fedbip_nvflare.core.baselines import fedamp_weights, group_weights, local_weights


def test_local_is_identity():
    assert torch.equal(local_weights(3), torch.eye(3))


def test_groups_average_uniformly_within_group_only():
    w = group_weights(["a", "b", "c", "d"], {"a": "x", "b": "x", "c": "x", "d": "y"})
    third = 1.0 / 3.0
    expected = torch.tensor(
        [[third, third, third, 0.0], [third, third, third, 0.0], [third, third, third, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    torch.testing.assert_close(w, expected)


def test_client_without_group_is_its_own_group():
    torch.testing.assert_close(group_weights(["a", "b"], {"a": "x"}), torch.eye(2))


def test_fedamp_hand_computed():
    # cos(θ1, θ2) = 0.6, cos(θ1, θ3) = 0, cos(θ2, θ3) = 0.8
    params = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.6, 0.8])}, {"w": torch.tensor([0.0, 1.0])}]
    w = fedamp_weights(params, sigma=0.5, self_weight=0.4)
    e = lambda c: math.exp(c / 0.5)  # noqa: E731
    row0 = [0.4, 0.6 * e(0.6) / (e(0.6) + e(0.0)), 0.6 * e(0.0) / (e(0.6) + e(0.0))]
    row1 = [0.6 * e(0.6) / (e(0.6) + e(0.8)), 0.4, 0.6 * e(0.8) / (e(0.6) + e(0.8))]
    torch.testing.assert_close(w[0], torch.tensor(row0), rtol=0, atol=1e-6)
    torch.testing.assert_close(w[1], torch.tensor(row1), rtol=0, atol=1e-6)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))


def test_fedamp_single_client_and_bad_options():
    assert torch.equal(fedamp_weights([{"w": torch.ones(2)}]), torch.ones(1, 1))
    with pytest.raises(ValueError, match="sigma"):
        fedamp_weights([{"w": torch.ones(2)}] * 2, sigma=0.0)
    with pytest.raises(ValueError, match="self_weight"):
        fedamp_weights([{"w": torch.ones(2)}] * 2, self_weight=1.5)
