"""ServerSettings: how the FedBip server runs (everything but the aggregation rule), validated in one place."""

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional

from fedbip_nvflare.models import LoraSettings
from fedbip_nvflare.models.backbones import DEFAULT_MODALITY, default_targets, get_backbone


def _check_int(name: str, value: Any, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")


@dataclass
class ServerSettings:
    """The FedBip server's settings; ``FedBipController`` takes them as its arguments (``**asdict``).

    Attributes:
        model: HF model id or local folder; only its config is read, to build θ̄⁰'s shapes.
        num_rounds: Number of FedBip rounds.
        min_clients: Least number of valid updates needed to aggregate a round.
        lora_r: LoRA rank (must equal the clients').
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (must equal the clients'; None: the modality's default).
        seed: Seed of θ̄⁰.
        train_timeout: Seconds a client may take for a train task (0: no limit).
        validate_timeout: Seconds a client may take for the final validate task (0: no limit).
        resume_from: A ``state`` folder of an earlier run to continue from (its next round).
        log_updates: Also save, every round, what each client was sent and returned (for audits/tests).
        federate_head: Federate the classification head with the LoRA tensors, under the same weights.
        num_labels: With ``federate_head``, the number of labels every client shares (None: heads join per label
            space with each client's first result).
        modality: What the sites train, a key of ``fedbip_nvflare.modalities.MODALITIES``.

    Raises:
        ValueError: A bad value, naming the setting and what it must be.
    """

    model: str
    num_rounds: int = 3
    min_clients: int = 1
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: Optional[List[str]] = None
    seed: int = 0
    train_timeout: int = 0
    validate_timeout: int = 0
    resume_from: Optional[str] = None
    log_updates: bool = False
    federate_head: bool = False
    num_labels: Optional[int] = None
    modality: str = DEFAULT_MODALITY

    def __post_init__(self) -> None:
        get_backbone(self.modality)  # fails early on an unknown modality
        if self.target_modules is None:
            self.target_modules = list(default_targets(self.modality))
        elif not isinstance(self.target_modules, str):
            self.target_modules = list(self.target_modules)
        _check_int("num_rounds", self.num_rounds, 1)
        _check_int("min_clients", self.min_clients, 1)
        for name in ("train_timeout", "validate_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0 seconds (0: no limit), got {value!r}")
        if self.num_labels is not None and not self.federate_head:
            raise ValueError("num_labels is only used with federate_head=True; remove it or federate the head")
        if self.num_labels is not None and (
            not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 2
        ):
            raise ValueError(
                f"num_labels must be the shared number of labels (an int >= 2) or None, got {self.num_labels!r}"
            )
        _ = self.lora  # validates the LoRA settings

    @property
    def lora(self) -> LoraSettings:
        """The LoRA settings θ̄⁰ is built with."""
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, tuple(self.target_modules))

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> "ServerSettings":
        """The settings among ``values`` (a caller's arguments, e.g. its ``locals()``); other keys are ignored and
        settings missing from ``values`` take their defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_dict(self) -> Dict[str, Any]:
        """The settings as keyword arguments (of ``FedBipController``)."""
        return asdict(self)
