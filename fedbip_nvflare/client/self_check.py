"""A site's checks of what the server sends it, FedCE-style (NVFlare's FedCE has clients score candidate models):
where the others' task vectors help, the site trains from the received model as FedBip does; where they conflict with
its task, it trains from its own last model (Local's continuation). Only the site's own data and models are used.

Two checks, one per site setting:

- ``holdout_fraction`` (:func:`choose_start`): the received model, the site's own last model or their midpoint,
  whichever has the lowest loss on training examples the site holds out (and never trains on).
- ``partner_check`` (:func:`check_partners`): nothing held out. On its training data, the site compares the received
  model with its own last model ("own"), or with a control point that has the same share of the site's own last
  update and nothing of the others' ("control").
"""

import logging
import math
import os
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from fedbip_nvflare.client.trainer_base import SiteTrainer

logger = logging.getLogger(__name__)

OWN_FILE = "own_federated.safetensors"
RECEIVED_FILE = "received_federated.safetensors"
# partner_check scores on at most this many of the site's training examples (a fixed seeded subset).
CHECK_EXAMPLES = 128
# Weights of the received model in the candidates (1: the received model, 0: the site's own last model). On a tie
# the earlier candidate wins, so the received model is kept unless another point is strictly better.
MIX_GRID: Tuple[float, ...] = (1.0, 0.5, 0.0)

Params = Dict[str, torch.Tensor]


def _save(params: Mapping[str, torch.Tensor], path: str) -> None:
    tmp = path + ".tmp"
    save_file({n: torch.as_tensor(t).float().contiguous() for n, t in params.items()}, tmp)
    os.replace(tmp, path)


def _load(trainer: SiteTrainer, path: str) -> Optional[Params]:
    if not os.path.exists(path):
        return None
    params = load_file(path)
    if sorted(params) != sorted(trainer.federated_names):
        logger.warning("%s holds other tensors than this site's adapter: ignored", path)
        return None
    return params


def save_own(trainer: SiteTrainer, state_dir: str) -> None:
    """Keeps the site's just-trained federated tensors (its own θ_i) in its private state folder (atomic write)."""
    _save(trainer.get_federated(), os.path.join(state_dir, OWN_FILE))


def load_own(trainer: SiteTrainer, state_dir: str) -> Optional[Params]:
    """The site's own last θ_i (None before its first round, or if its names differ from the trainer's)."""
    return _load(trainer, os.path.join(state_dir, OWN_FILE))


def save_received(received: Mapping[str, torch.Tensor], state_dir: str) -> None:
    """Keeps the federated tensors the site received this round (θ̄_i, the base of its task vector) (atomic write)."""
    _save(received, os.path.join(state_dir, RECEIVED_FILE))


def mix(received: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], weight: float) -> Params:
    """``own + weight · (received − own)`` per tensor; exactly ``received`` at weight 1 and ``own`` at 0, so those
    candidates are FedBip's and Local's starting points bit for bit."""
    if weight in (0.0, 1.0):
        return dict(own if weight == 0.0 else received)
    return {n: own[n] + weight * (received[n] - own[n]) for n in own}


def choose_start(trainer: SiteTrainer, received: Mapping[str, torch.Tensor], state_dir: str) -> Dict[str, float]:
    """Loads into ``trainer`` the candidate of :data:`MIX_GRID` with the lowest held-out loss.

    Without a holdout (``holdout_fraction`` 0) or before the site's first round, the received model stays loaded.

    Args:
        trainer: The site's trainer, with the received model already loaded.
        received: The received federated tensors (as loaded).
        state_dir: The site's private state folder (where :func:`save_own` keeps its own model).

    Returns:
        ``{"received_weight": chosen weight, "holdout_loss": its loss, "holdout_loss_received": the received
        model's loss}`` (empty when no check ran).
    """
    if not trainer.holdout:
        return {}
    own = load_own(trainer, state_dir)
    if own is None:
        return {"received_weight": 1.0, "holdout_loss": trainer.holdout_loss()}
    names = [n for n in trainer.federated_names if n in received]  # a federated head may not have arrived yet
    received = {n: torch.as_tensor(received[n]).float() for n in names}
    own = {n: own[n] for n in names}
    losses: List[float] = []
    for weight in MIX_GRID:
        trainer.set_federated(mix(received, own, weight))
        losses.append(trainer.holdout_loss())
    finite = [k for k in range(len(MIX_GRID)) if math.isfinite(losses[k])]
    best = min(finite, key=lambda k: (losses[k], k)) if finite else 0
    trainer.set_federated(mix(received, own, MIX_GRID[best]))
    return {
        "received_weight": MIX_GRID[best],
        "holdout_loss": losses[best],
        "holdout_loss_received": losses[0],
    }


def _dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    return sum(float(torch.sum(a[n].double() * b[n].double())) for n in a)


def check_partners(trainer: SiteTrainer, received: Mapping[str, torch.Tensor], state_dir: str) -> Dict[str, float]:
    """Loads into ``trainer`` the received model θ̄', or the site's own last model θ where θ̄' fits the site's
    training examples worse than the comparison point of ``settings.partner_check`` does.

    The losses are the mean training loss on (at most :data:`CHECK_EXAMPLES` of) the site's training examples, nothing
    held out. The comparison point, by mode (``client.settings.PARTNER_CHECKS``):

    - ``"own"``: θ itself. θ̄' is kept only where it fits the site's data at least as well as the site's own model,
      which was trained on that data: the others' updates must make up for the share of the site's own update that
      the received model lacks.
    - ``"control"``: with θ̄ the model received last round (θ was trained from it, so τ = θ − θ̄ is the task vector
      the server got), the point ``θ̄ + a·τ``, ``a`` the projection of θ̄' − θ̄ on τ clipped to [0, 1]: the site's
      own share of θ̄' and nothing of the others', so only what the others add beyond the site's direction is judged.

    Without ``partner_check`` nothing is checked; before the site's second round (nothing trained before), the
    received model stays loaded.

    Args:
        trainer: The site's trainer, with the received model already loaded.
        received: The received federated tensors (as loaded).
        state_dir: The site's private state folder (where :func:`save_own` and :func:`save_received` keep its
            last own and received models).

    Returns:
        ``{"received_weight": 1.0 (received kept) or 0.0 (own model), "check_loss_received":, "check_loss_own":}``
        and, for "control", ``"own_share": a, "check_loss_control":`` (only ``received_weight`` before the second
        round; empty without the check).
    """
    mode = trainer.settings.partner_check
    if mode is None:
        return {}
    own = load_own(trainer, state_dir)
    before = _load(trainer, os.path.join(state_dir, RECEIVED_FILE)) if mode == "control" else None
    if own is None or (mode == "control" and before is None):
        return {"received_weight": 1.0}
    names = [n for n in trainer.federated_names if n in received]  # a federated head may not have arrived yet
    now = {n: torch.as_tensor(received[n]).float() for n in names}
    generator = torch.Generator().manual_seed(trainer.settings.seed * 7_919 + 11)
    pool = trainer.trained_on
    examples = sorted(pool[i] for i in torch.randperm(len(pool), generator=generator)[:CHECK_EXAMPLES].tolist())
    check = {"check_loss_received": trainer.loss_on(examples)}
    if mode == "control":
        tau = {n: own[n] - before[n] for n in names}
        moved = {n: now[n] - before[n] for n in names}
        norm2 = _dot(tau, tau)
        check["own_share"] = min(1.0, max(0.0, _dot(moved, tau) / norm2)) if norm2 > 0 else 0.0
        trainer.set_federated({n: before[n] + check["own_share"] * tau[n] for n in names})
        check["check_loss_control"] = trainer.loss_on(examples)
    trainer.set_federated({n: own[n] for n in names})
    check["check_loss_own"] = trainer.loss_on(examples)
    bar = check["check_loss_control" if mode == "control" else "check_loss_own"]
    keep = math.isfinite(check["check_loss_received"]) and not check["check_loss_received"] > bar  # NaN bar: keep
    if keep:
        trainer.set_federated(now)
    return {"received_weight": 1.0 if keep else 0.0, **check}
