"""Local fine-tuning settings shared by the executor, the Client API script and the recipe.

:class:`TrainSettings` is the one declaration of a site's fine-tuning options: the executor takes it whole, the
recipe builds it, and the Client API script's flags are generated from its fields (:func:`add_arguments`).
"""

import argparse
import dataclasses
import re
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

PRECISIONS: Tuple[str, ...] = ("fp32", "bf16", "fp16")
# partner_check's modes: what the received model's training loss is compared with (client.self_check.check_partners).
PARTNER_CHECKS: Tuple[str, ...] = ("own", "control")


@dataclass
class TrainSettings:
    """How a site fine-tunes in one round.

    Attributes:
        local_epochs: Epochs over the site's training split per round (E).
        batch_size: Training batch size.
        learning_rate: AdamW learning rate of the LoRA tensors.
        head_learning_rate: AdamW learning rate of the client-private head.
        weight_decay: AdamW weight decay.
        max_length: Token truncation length (of prompt + response for causal LMs).
        eval_batch_size: Batch size for evaluation.
        num_threads: torch CPU threads for this site (None: torch's default).
        seed: Seed for shuffling and head initialisation.
        train_lora: Train the LoRA tensors; False trains only the head on the frozen pre-trained backbone
            (a linear probe: LoRA's B stays zero, so the adapter adds nothing).
        federate_head: The classification head is federated with the LoRA tensors instead of staying
            private (only for clients that share one label space).
        round_eval_examples: Evaluate the model received each round (and the round-0 local model) on this many
            test examples, a fixed seeded subset, instead of the whole test split; the final personalized
            model is always evaluated on the whole split. None: the whole split every round.
        precision: ``"fp32"``; ``"bf16"`` to run forward passes (training and evaluation) under
            ``torch.autocast`` with bfloat16 on the trainer's device (CUDA, or a CPU with bf16 support); ``"fp16"``
            the same with float16 and a gradient scaler (CUDA). The LoRA tensors, head and optimizer state stay
            fp32, so what travels is fp32 either way.
        gradient_accumulation_steps: Optimizer step every this many batches (effective batch size
            ``batch_size × gradient_accumulation_steps``; a last partial group still steps).
        gradient_checkpointing: Recompute activations in the backward pass (less memory, more compute), for
            models that support it (HF ``gradient_checkpointing_enable``).
        max_new_tokens: Generation length of a causal LM's evaluation.
        holdout_fraction: Fraction of the training examples the site holds out (a fixed seeded subset, never
            trained on) to check what it receives: each round, and for the final model, it starts from the point
            between its own last model and the received personalized one (see ``client.self_check.MIX_GRID``) with
            the lowest loss on them. 0 (default): no check, the site starts from what it receives.
        partner_check: Each round after the first, and for the final model, the site checks the model it receives on
            its own training data (nothing held out) and starts from its own last model instead where the received
            one has the higher loss than the comparison point: ``"own"``, its own last model; ``"control"``, the
            point with the received model's share of the site's own last update and nothing of the others' (see
            ``client.self_check.check_partners``). Not with ``holdout_fraction``. None (default): no check.
    """

    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    head_learning_rate: float = 5e-3
    weight_decay: float = 0.0
    max_length: int = 128
    eval_batch_size: int = 64
    num_threads: Optional[int] = None
    seed: int = 0
    train_lora: bool = True
    federate_head: bool = False
    round_eval_examples: Optional[int] = None
    precision: str = "fp32"
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    max_new_tokens: int = 32
    holdout_fraction: float = 0.0
    partner_check: Optional[str] = None

    def __post_init__(self):
        for name in (
            "local_epochs",
            "batch_size",
            "max_length",
            "eval_batch_size",
            "gradient_accumulation_steps",
            "max_new_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.round_eval_examples is not None and (
            not isinstance(self.round_eval_examples, int)
            or isinstance(self.round_eval_examples, bool)
            or self.round_eval_examples <= 0
        ):
            raise ValueError(f"round_eval_examples must be a positive int or None, got {self.round_eval_examples!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads <= 0):
            raise ValueError(f"num_threads must be a positive int or None, got {self.num_threads!r}")
        if (
            not isinstance(self.holdout_fraction, (int, float))
            or isinstance(self.holdout_fraction, bool)
            or not 0 <= self.holdout_fraction < 1
        ):
            raise ValueError(f"holdout_fraction must be a number in [0, 1), got {self.holdout_fraction!r}")
        if self.partner_check is not None and self.partner_check not in PARTNER_CHECKS:
            raise ValueError(f"partner_check must be one of {list(PARTNER_CHECKS)} or None, got {self.partner_check!r}")
        if self.partner_check is not None and self.holdout_fraction:
            raise ValueError(
                "partner_check and holdout_fraction are two ways to check the received model: set one of them, "
                f"got partner_check={self.partner_check!r} and holdout_fraction={self.holdout_fraction}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> "TrainSettings":
        """The settings among ``values`` (a caller's arguments, e.g. its ``locals()``); other keys are ignored and
        settings missing from ``values`` take their defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of the settings."""
        return asdict(self)


def _field_help() -> Dict[str, str]:
    """``{field: description}`` from TrainSettings' docstring ``Attributes:`` section."""
    doc = (TrainSettings.__doc__ or "").split("Attributes:", 1)[-1]
    helps: Dict[str, str] = {}
    name = None
    for line in doc.splitlines():
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            name, text = match.groups()
            helps[name] = text
        elif name and line.startswith(" " * 12):
            helps[name] += " " + line.strip()
    return helps


def _field_type(hint: Any) -> type:
    """The flag's type of a field's type hint (``Optional[int]`` -> ``int``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one ``--field-name`` flag per TrainSettings field, typed and defaulted from the dataclass.

    A bool field takes ``True`` or ``False`` (how ``FedBipRecipe`` writes it); values are validated when
    :func:`from_arguments` builds the settings.
    """
    hints = typing.get_type_hints(TrainSettings)
    helps = _field_help()
    for f in dataclasses.fields(TrainSettings):
        kind = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, f.name).replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, default=str(f.default), choices=["True", "False"], help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=f.default, help=text)


def from_arguments(args: argparse.Namespace) -> TrainSettings:
    """The TrainSettings of flags added by :func:`add_arguments` (raises ValueError for bad values)."""
    hints = typing.get_type_hints(TrainSettings)
    values = {}
    for f in dataclasses.fields(TrainSettings):
        value = getattr(args, f.name)
        values[f.name] = value == "True" if _field_type(hints[f.name]) is bool else value
    return TrainSettings(**values)
