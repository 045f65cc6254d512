"""A site's check of what the server sends it: start from the received personalized model, the site's own last
model, or a point between them, whichever has the lowest loss on examples the site held out of training.

A FedCE-style client-side safeguard (NVFlare's FedCE has clients score candidate models): where the others' task
vectors help, the received model wins and the site trains from it as FedBip does; where they conflict with the site's
task, its own model (Local's continuation) wins. Only the site's own data and its own two models are used.
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
# Weights of the received model in the candidates (1: the received model, 0: the site's own last model). On a tie
# the earlier candidate wins, so the received model is kept unless another point is strictly better.
MIX_GRID: Tuple[float, ...] = (1.0, 0.5, 0.0)

Params = Dict[str, torch.Tensor]


def save_own(trainer: SiteTrainer, state_dir: str) -> None:
    """Keeps the site's just-trained federated tensors (its own θ_i) in its private state folder (atomic write)."""
    path = os.path.join(state_dir, OWN_FILE)
    tmp = path + ".tmp"
    save_file({n: t.contiguous() for n, t in trainer.get_federated().items()}, tmp)
    os.replace(tmp, path)


def load_own(trainer: SiteTrainer, state_dir: str) -> Optional[Params]:
    """The site's own last θ_i (None before its first round, or if its names differ from the trainer's)."""
    path = os.path.join(state_dir, OWN_FILE)
    if not os.path.exists(path):
        return None
    own = load_file(path)
    if sorted(own) != sorted(trainer.federated_names):
        logger.warning("%s holds other tensors than this site's adapter: ignored", path)
        return None
    return own


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
