"""Fake sites for driving FedBipController.run() without an NVFlare runtime.

The controller is built as in NVFlare's unit tests: construct the component and replace its I/O
(``send_model``, ``sample_clients``, ``get_run_dir``, ``get_num_standing_tasks``, logging) with fakes.
:class:`FakeSites` answers every task at once through the callback, deterministically, and records
what each site was sent together with the controller's state at that moment.
"""

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from fedbip_nvflare.constants import FedBipKeys as K

Params = Dict[str, torch.Tensor]

LORA_SHAPES = {
    "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight": (2, 4),
    "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight": (4, 2),
    "base_model.model.encoder.layer.0.attention.self.value.lora_A.weight": (2, 4),
    "base_model.model.encoder.layer.0.attention.self.value.lora_B.weight": (4, 2),
    "base_model.model.encoder.layer.1.attention.self.query.lora_A.weight": (2, 4),
    "base_model.model.encoder.layer.1.attention.self.query.lora_B.weight": (4, 2),
    "base_model.model.encoder.layer.1.attention.self.value.lora_A.weight": (2, 4),
    "base_model.model.encoder.layer.1.attention.self.value.lora_B.weight": (4, 2),
}
GROUPS = ("base_model.model.encoder.layer.0.", "base_model.model.encoder.layer.1.")
SITES = ["site-1", "site-2", "site-3"]
HEAD_HIDDEN = 4  # hidden size of the fake sites' heads
# site-1 and site-2 train on related data (shared direction), site-3 on something else
_FAMILY = {"site-1": 0, "site-2": 0, "site-3": 1, "site-4": 1}

# behaviours a site can show in a given round (FakeSites.behaviour[(site, round)])
BAD_BEHAVIOURS = ("nan", "inf", "shape", "missing", "extra", "int", "diff", "none")


def make_theta0(seed: int = 0) -> Params:
    """A small deterministic θ̄⁰ named like peft's LoRA state dict."""
    gen = torch.Generator().manual_seed(1000 + seed)
    return {n: 0.1 * torch.randn(s, generator=gen) for n, s in LORA_SHAPES.items()}


def site_delta(site: str, rnd: int) -> Dict[str, np.ndarray]:
    """The deterministic local-training step of a site in a round (family direction + site noise)."""
    idx = int(site.rsplit("-", 1)[-1])
    family = np.random.default_rng([7, _FAMILY.get(site, idx), rnd])
    own = np.random.default_rng([11, idx, rnd])
    return {
        n: (family.standard_normal(s) + 0.7 * own.standard_normal(s)).astype(np.float32) * 0.01
        for n, s in LORA_SHAPES.items()
    }


def accuracy_local(site: str, rnd: int) -> float:
    return 0.5 + 0.01 * int(site.rsplit("-", 1)[-1]) + 0.1 * rnd


def final_accuracy(site: str) -> float:
    return 0.8 + 0.01 * int(site.rsplit("-", 1)[-1])


@dataclass
class Call:
    """One send_model call as the controller made it."""

    task: str
    targets: List[str]
    round: Optional[int]
    params: Dict[str, np.ndarray]  # copy of what was sent
    expected: Params  # the controller's θ̄ for the target at send time (copy)
    returned: Optional[Dict[str, np.ndarray]] = None  # copy of what the site answered
    min_responses: Optional[int] = None
    timeout: Optional[int] = None
    params_type: object = None
    meta: dict = field(default_factory=dict)  # the task's meta (the run key)


@dataclass
class FakeSites:
    """Plays the sites for a controller: answers each task through its callback, immediately."""

    controller: object
    behaviour: Dict[tuple, str] = field(default_factory=dict)
    validate_metrics: Optional[bool] = True
    calls: List[Call] = field(default_factory=list)
    heads: Dict[str, int] = field(default_factory=dict)  # {site: labels}: sites also return a head.* of this size

    # -- the patched ModelController.send_model --------------------------------------------------
    def send_model(self, task_name="train", data=None, targets=None, min_responses=None, timeout=0, callback=None):
        ctl = self.controller
        target = targets[0] if targets else None
        expected = ctl.thetas.get(target, ctl.theta0)
        call = Call(
            task=task_name,
            targets=list(targets or []),
            round=data.current_round,
            params=copy.deepcopy(data.params),
            expected={n: t.clone() for n, t in expected.items()},
            min_responses=min_responses,
            timeout=timeout,
            params_type=data.params_type,
            meta=dict(data.meta or {}),
        )
        self.calls.append(call)
        if task_name == ctl.validate_task_name:
            reply = self._validate_reply(target)
        else:
            reply = self._train_reply(target, data)
        if reply is None:
            return
        if reply.params is not None:
            call.returned = copy.deepcopy(reply.params)
        reply.meta["client_name"] = target  # what NVFlare's _process_result adds
        callback(reply)

    def _train_reply(self, site: str, data: FLModel) -> Optional[FLModel]:
        rnd = data.current_round
        kind = self.behaviour.get((site, rnd))
        if kind == "none":
            return None
        if kind == "abort":
            self.controller.abort_signal.trigger(True)
            return None
        received = data.params
        if kind == "mutate":  # a site (or a filter) working in place on what it received
            for arr in received.values():
                arr += 1.0
        delta = site_delta(site, rnd)
        params = {n: (np.asarray(received[n]) + delta[n]).astype(np.float32) for n in received if n in delta}
        if site in self.heads:
            params.update(self._head_after_training(site, rnd, received))
        params_type = ParamsType.FULL
        first = next(iter(params))
        if kind == "nan":
            params[first][0, 0] = np.nan
        elif kind == "inf":
            params[first][0, 0] = np.inf
        elif kind == "shape":
            params[first] = params[first].T.copy()
        elif kind == "missing":
            del params[first]
        elif kind == "extra":
            params["base_model.model.classifier.weight"] = np.zeros((2, 2), dtype=np.float32)
        elif kind == "int":
            params[first] = params[first].astype(np.int64)
        elif kind == "diff":
            params_type = ParamsType.DIFF
        metrics = {K.ACCURACY_LOCAL: accuracy_local(site, rnd), K.TRAIN_LOSS: 1.0 / (rnd + 1), K.N_EXAMPLES: 10}
        meta = {K.TASK: f"task-{site}", K.N_TRAIN: 10, K.N_TEST: 5}
        if site in self.heads:
            meta[K.LABEL_SPACE] = f"{self.heads[site]}-classes"
        return FLModel(params=params, params_type=params_type, metrics=metrics, meta=meta)

    def _head_after_training(self, site: str, rnd: int, received: dict) -> Dict[str, np.ndarray]:
        """The site's head after a round: the received head, or its fresh one, plus a label-space direction."""
        from fedbip_nvflare.models import initial_head

        labels = self.heads[site]
        start = {n: np.asarray(v) for n, v in received.items() if n.startswith("head.")}
        if not start:
            start = {n: t.numpy() for n, t in initial_head(labels, HEAD_HIDDEN, self.controller.seed).items()}
        space = np.random.default_rng([13, labels, rnd])
        own = np.random.default_rng([17, int(site.rsplit("-", 1)[-1]), rnd])
        return {
            n: (v + 0.01 * (space.standard_normal(v.shape) + 0.5 * own.standard_normal(v.shape))).astype(np.float32)
            for n, v in start.items()
        }

    def _validate_reply(self, site: str) -> Optional[FLModel]:
        if self.behaviour.get((site, "validate")) == "none":
            return None
        metrics = {K.ACCURACY: final_accuracy(site)} if self.validate_metrics else None
        meta = {K.ADAPTER_DIR: f"/adapters/{site}", K.TASK: f"task-{site}"}
        return FLModel(params=None, metrics=metrics, meta=meta)

    # -- views of the record ------------------------------------------------------------------------
    def train_calls(self, rnd: Optional[int] = None) -> List[Call]:
        return [c for c in self.calls if c.task == self.controller.train_task_name and (rnd is None or c.round == rnd)]

    def validate_calls(self) -> List[Call]:
        return [c for c in self.calls if c.task == self.controller.validate_task_name]

    def sent(self, rnd: int) -> Dict[str, Params]:
        """{site: what it was sent in round rnd} as fp32 tensors."""
        return {
            c.targets[0]: {n: torch.from_numpy(np.array(a)) for n, a in c.params.items()} for c in self.train_calls(rnd)
        }

    def returned(self, rnd: int, sites=None) -> Dict[str, Params]:
        """{site: what it returned in round rnd} as fp32 tensors, for the given (or all answering) sites."""
        out = {}
        for c in self.train_calls(rnd):
            site = c.targets[0]
            if c.returned is not None and (sites is None or site in sites):
                out[site] = {n: torch.as_tensor(np.array(a)).float() for n, a in c.returned.items()}
        return out


class LogRecorder:
    """Replaces the controller's info/warning/error (which need an FLContext) and keeps the messages."""

    def __init__(self):
        self.records: List[tuple] = []

    def bind(self, controller):
        for level in ("debug", "info", "warning", "error", "exception"):
            setattr(controller, level, lambda msg, level=level: self.records.append((level, str(msg))))

    def messages(self, level: Optional[str] = None) -> List[str]:
        return [m for lv, m in self.records if level is None or lv == level]
