"""Fixtures building a FedBipController with fake sites (see fedbip_fakes.py)."""

import os
import sys
from dataclasses import dataclass

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (_HERE, os.path.join(os.path.dirname(_HERE), "core")):  # fakes, and the float64 reference
    if _path not in sys.path:
        sys.path.insert(0, _path)

from fedbip_fakes import SITES, FakeSites, LogRecorder, make_theta0  # noqa: E402
from nvflare.apis.signal import Signal  # noqa: E402

import fedbip_nvflare.server.controller as controller_module  # noqa: E402
from fedbip_nvflare.server.controller import FedBipController  # noqa: E402
from fedbip_nvflare.server.rules import RULES, make_rule  # noqa: E402

RULE_OPTIONS = {name for rule in RULES.values() for name in rule.option_names()}


@dataclass
class Harness:
    controller: FedBipController
    sites: FakeSites
    log: LogRecorder
    run_dir: str

    @property
    def out_dir(self):
        return os.path.join(self.run_dir, "fedbip")

    @property
    def state_dir(self):
        return os.path.join(self.out_dir, "state")

    def run(self):
        self.controller.run()
        return self


@pytest.fixture
def adapter_calls(monkeypatch):
    """Patches the controller's θ̄⁰ builder (no model download) and records its calls."""
    calls = []

    def fake_initial_adapter(path, lora, seed=0, head_labels=None, modality="text"):
        calls.append((path, lora, seed))
        return make_theta0(seed)

    monkeypatch.setattr(controller_module, "initial_adapter", fake_initial_adapter)
    monkeypatch.setattr(controller_module, "resolve_model_path", lambda model: model)
    return calls


@pytest.fixture
def make_harness(tmp_path, adapter_calls):
    """make_harness(sites=SITES, behaviour={(site, round): kind}, name="run", heads={site: labels}, **kwargs).

    ``aggregation``, ``aggregation_options`` and rule options (layerwise, negative, ...) among ``kwargs`` build the
    controller's rule (``make_rule``); the other ``kwargs`` are the controller's.
    """

    def make(
        sites=SITES,
        behaviour=None,
        name="run",
        validate_metrics=True,
        heads=None,
        aggregation="fedbip",
        aggregation_options=None,
        **kwargs,
    ):
        kwargs.setdefault("num_rounds", 2)
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in RULE_OPTIONS}
        kwargs.setdefault("rule", make_rule(aggregation, **dict(aggregation_options or {}), **options))
        controller = FedBipController(model="fake/model", **kwargs)
        run_dir = tmp_path / name
        run_dir.mkdir(exist_ok=True)
        fake = FakeSites(
            controller, behaviour=dict(behaviour or {}), validate_metrics=validate_metrics, heads=dict(heads or {})
        )
        log = LogRecorder()
        log.bind(controller)
        controller.get_run_dir = lambda: str(run_dir)
        controller.sample_clients = lambda num_clients=None: list(sites)
        controller.get_num_standing_tasks = lambda: 0
        controller.send_model = fake.send_model
        controller.abort_signal = Signal()
        return Harness(controller, fake, log, str(run_dir))

    return make
