"""The modality-independent site trainer: receives and returns federated LoRA tensors, trains, evaluates, saves.

A modality (text, vision, causal LM) subclasses :class:`SiteTrainer` with how its model is built, how its data is
encoded, the loss of a training batch and the evaluation; receiving and returning federated tensors, the training
loop (precision, gradient accumulation and checkpointing), the private head and saving are shared.
"""

import contextlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from typing import Any, ContextManager, Dict, Iterator, List, Mapping, Optional, Protocol, Sized, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fedbip_nvflare.client.settings import TrainSettings
from fedbip_nvflare.models.lora import LoraSettings

logger = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
LABELS_FILE = "labels.json"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def round_seed(seed: int, round_index: int) -> int:
    """The seed of a round's LoRA dropout; epoch ``e`` shuffles with ``round_seed + e``.

    Derived from ``(seed, round_index)`` only, so a round gives the same result whether the site's process lives for
    the whole run or is started for each task.
    """
    return (seed * 100_003 + round_index) * 1_009


class SiteModel(Protocol):
    """What :meth:`SiteTrainer._build` returns: an ``nn.Module`` with a peft backbone and an optional head.

    Attributes:
        backbone: The ``peft.PeftModel`` (its adapter state dict is what travels).
        head: The classification head, or None without a head.
    """

    backbone: Any
    head: Optional[nn.Module]

    def head_state(self) -> Dict[str, torch.Tensor]:
        """The head's tensors, ``{"head.<name>": tensor}`` (empty without a head)."""

    def load_head_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Loads tensors saved by :meth:`head_state`."""

    def parameters(self) -> Iterator[nn.Parameter]:
        """All parameters (``nn.Module.parameters``)."""

    def to(self, device: torch.device) -> "SiteModel":
        """Moves the model (``nn.Module.to``)."""

    def train(self, mode: bool = True) -> "SiteModel":
        """Training mode (``nn.Module.train``)."""

    def eval(self) -> "SiteModel":
        """Evaluation mode (``nn.Module.eval``)."""


class SiteTrainer(ABC):
    """One site's model and data: receives federated LoRA tensors, trains, evaluates, saves.

    The base model is built once (:meth:`_build`); a client-private head, if the model has one, persists across
    rounds (in memory, and on disk through :meth:`save_head` / :meth:`load_head`).

    Subclasses implement :meth:`_build` (a :class:`SiteModel`), :meth:`_prepare_data` (``self._train`` and
    ``self._test``, whose lengths are :attr:`n_train` and :attr:`n_test`), :meth:`_batch_loss`, :meth:`evaluate`
    and :meth:`_personalized_files`.

    Args:
        model_name_or_path: HF model id or local folder.
        data: The site's task data (``task``, ``label_names``, ``label_space`` and the modality's splits).
        lora: LoRA settings (identical on every site).
        settings: Local training settings.
        device: torch device (default: CUDA if available, else CPU).
    """

    def __init__(
        self,
        model_name_or_path: str,
        data: Any,
        lora: LoraSettings,
        settings: TrainSettings,
        device: Optional[str] = None,
    ):
        from peft import get_peft_model_state_dict

        self.data = data
        self.settings = settings
        self.model_name_or_path = model_name_or_path
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model: SiteModel = self._build(model_name_or_path, lora)
        if settings.gradient_checkpointing:
            self._enable_gradient_checkpointing()
        self.model.to(self.device)
        self._lora_names = list(get_peft_model_state_dict(self.model.backbone).keys())
        head_names = list(self.model.head_state()) if settings.federate_head else []
        self._federated_names = self._lora_names + head_names
        self._shapes: Dict[str, Tuple[int, ...]] = {n: tuple(t.shape) for n, t in self.get_federated().items()}
        self._prepare_data()
        self.holdout, self._fit = self._split_holdout()

    # -- what a modality implements ------------------------------------------------------------------------------
    _train: Sized
    """The encoded training examples (set by :meth:`_prepare_data`)."""
    _test: Sized
    """The encoded test examples (set by :meth:`_prepare_data`)."""

    @abstractmethod
    def _build(self, model_name_or_path: str, lora: LoraSettings) -> SiteModel:
        """Builds the model (pre-trained backbone wrapped by peft with LoRA, plus the head if any)."""

    @abstractmethod
    def _prepare_data(self) -> None:
        """Encodes ``self.data`` once (called after :meth:`_build`) into ``self._train`` and ``self._test``."""

    @abstractmethod
    def _batch_loss(self, indices: List[int]) -> torch.Tensor:
        """Mean loss of the training examples ``indices`` (called under :meth:`autocast`)."""

    @abstractmethod
    def evaluate(self, indices: Optional[List[int]] = None) -> float:
        """The primary metric in [0, 1] on the site's test split, or on the test examples ``indices``."""

    @abstractmethod
    def _personalized_files(self, directory: str) -> None:
        """Writes what a user needs beside the saved adapter to rebuild the personalized model."""

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return len(self._train)

    @property
    def trained_on(self) -> List[int]:
        """The training indices the site trains on: all of them but the holdout."""
        return list(self._fit)

    def _split_holdout(self) -> Tuple[List[int], List[int]]:
        """``(held-out, trained-on)`` training indices: ``settings.holdout_fraction`` of them (at least one, and at
        least one left to train on) held out, a fixed subset seeded by ``settings.seed``."""
        indices = list(range(self.n_train))
        if self.settings.holdout_fraction <= 0:
            return [], indices
        if self.n_train < 2:
            raise ValueError(
                f"holdout_fraction={self.settings.holdout_fraction} needs at least 2 training examples, site task "
                f"{self.data.task!r} has {self.n_train}; give the site more data or set holdout_fraction=0"
            )
        n = min(self.n_train - 1, max(1, round(self.n_train * self.settings.holdout_fraction)))
        generator = torch.Generator().manual_seed(self.settings.seed * 6_007 + 29)
        held = sorted(torch.randperm(self.n_train, generator=generator)[:n].tolist())
        held_set = set(held)
        return held, [i for i in indices if i not in held_set]

    def holdout_loss(self) -> float:
        """Mean training loss of the current model on the held-out training examples (NaN without a holdout)."""
        return self.loss_on(self.holdout)

    def loss_on(self, indices: List[int]) -> float:
        """Mean training loss of the current model on the training examples ``indices``, without training (NaN
        for none)."""
        if not indices:
            return float("nan")
        self.model.eval()
        size, total = self.settings.eval_batch_size, 0.0
        with torch.no_grad(), self.autocast():
            for b in range(0, len(indices), size):
                batch = indices[b : b + size]
                total += float(self._batch_loss(batch)) * len(batch)
        return total / len(indices)

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return len(self._test)

    def extra_metrics(self) -> Dict[str, float]:
        """Further metrics of the last :meth:`evaluate` (e.g. ROUGE-L beside exact match); none by default."""
        return {}

    # -- shared ---------------------------------------------------------------------------------------------------
    def _write_labels(self, directory: str, **extra: Any) -> None:
        """Writes ``labels.json``: the task, its label names (logit ``i`` is ``label_names[i]``), the base model and
        ``extra`` entries."""
        info = {
            "task": self.data.task,
            "label_names": list(self.data.label_names),
            "base_model": self.model_name_or_path,
            **extra,
        }
        with open(os.path.join(directory, LABELS_FILE), "w") as f:
            json.dump(info, f, indent=2)

    def _enable_gradient_checkpointing(self) -> None:
        backbone = self.model.backbone
        kwargs = {"use_reentrant": False}  # no need for inputs that require grad (frozen embeddings)
        if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(backbone, "gradient_checkpointing_enable"):
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            raise ValueError(
                f"gradient_checkpointing=True: model {self.model_name_or_path!r} does not support gradient "
                "checkpointing (no activation/gradient_checkpointing_enable); set it to False"
            )

    @property
    def federated_names(self) -> List[str]:
        """Names of the federated tensors: LoRA (peft's adapter state-dict names), plus ``head.*`` if federated."""
        return list(self._federated_names)

    @property
    def has_head(self) -> bool:
        """Whether the model has a (client-private unless federated) head."""
        return self.model.head is not None

    def autocast(self) -> ContextManager:
        """The forward passes' precision context: ``torch.autocast`` to bfloat16 / float16, or nothing for fp32."""
        dtype = _AUTOCAST_DTYPES.get(self.settings.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def get_federated(self) -> Dict[str, torch.Tensor]:
        """The current federated tensors (CPU, fp32 copies)."""
        from peft import get_peft_model_state_dict

        state = dict(get_peft_model_state_dict(self.model.backbone))
        if self.settings.federate_head:
            state.update(self.model.head_state())
        return {n: state[n].detach().float().cpu().clone() for n in self._federated_names}

    def set_federated(self, params: Mapping[str, object]) -> None:
        """Loads received federated tensors (numpy arrays or tensors) into the LoRA adapter (and head).

        A federated head may be absent (heads federated per label space join after the site's first round):
        the site then keeps its own head.

        Raises:
            ValueError: Names or shapes differ from this site's adapter.
        """
        from peft import set_peft_model_state_dict

        head_names = [n for n in self._federated_names if n not in self._lora_names]
        expected = self._federated_names if any(n in params for n in head_names) else self._lora_names
        missing = [n for n in expected if n not in params]
        extra = [n for n in params if n not in expected]
        if missing or extra:
            raise ValueError(
                f"received federated tensors do not match this site's LoRA adapter: missing {missing[:3]}, "
                f"unexpected {extra[:3]}; every site and the server must use the same model, modality, LoRA settings "
                "and federate_head setting"
            )
        state = {}
        for n in expected:
            value = torch.as_tensor(np.asarray(params[n]) if not isinstance(params[n], torch.Tensor) else params[n])
            if tuple(value.shape) != self._shapes[n]:
                raise ValueError(f"received tensor {n} has shape {tuple(value.shape)}, expected {self._shapes[n]}")
            state[n] = value.to(torch.float32)
        set_peft_model_state_dict(self.model.backbone, {n: state[n] for n in self._lora_names})
        head = {n: state[n].to(self.device) for n in state if n not in self._lora_names}
        if head:
            self.model.load_head_state(head)

    def _param_groups(self) -> List[Dict[str, Any]]:
        s = self.settings
        head_params = list(self.model.head.parameters()) if self.has_head else []
        head_ids = {id(p) for p in head_params}
        lora_params = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head_params, "lr": s.head_learning_rate}] if head_params else []
        if s.train_lora:
            groups.append({"params": lora_params, "lr": s.learning_rate})
        else:  # probe: no gradient reaches the backbone at all
            for p in lora_params:
                p.requires_grad_(False)
        return [g for g in groups if g["params"]]

    def train(self, epochs: Optional[int] = None, round_index: int = 0) -> Dict[str, float]:
        """Fine-tunes LoRA and head for ``epochs`` (default ``settings.local_epochs``) with a fresh AdamW.

        Shuffling and dropout are seeded from ``(seed, round_index, epoch)`` (:func:`round_seed`), so a round gives
        the same result whether the site's process lives for the whole run or is started for each task. Batches run
        under :meth:`autocast` (see :meth:`_train_epoch`). With nothing to train (no head and ``train_lora=False``: the
        zero-shot baseline) nothing changes and the loss is NaN.

        Returns:
            ``train_loss`` (mean over batches), ``n_examples``, ``examples_per_s``, ``seconds``.
        """
        s = self.settings
        epochs = s.local_epochs if epochs is None else epochs
        groups = self._param_groups()
        if not groups:
            return self._summary([], 0, 0.0)
        optimizer = torch.optim.AdamW(groups, weight_decay=s.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type) if s.precision == "fp16" else None
        self.model.train()
        losses: List[float] = []
        seen = 0
        start = time.perf_counter()
        torch.manual_seed(round_seed(s.seed, round_index))  # LoRA dropout
        for epoch in range(epochs):
            epoch_start = time.perf_counter()
            generator = torch.Generator().manual_seed(round_seed(s.seed, round_index) + epoch)
            order = [self._fit[i] for i in torch.randperm(len(self._fit), generator=generator).tolist()]
            epoch_losses = self._train_epoch(optimizer, scaler, order)
            losses.extend(epoch_losses)
            seen += len(order)
            elapsed = time.perf_counter() - epoch_start
            logger.info(
                "%s round %d epoch %d/%d: loss %.4f, %.1f examples/s",
                self.data.task,
                round_index,
                epoch + 1,
                epochs,
                float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
                len(order) / elapsed if elapsed > 0 else 0.0,
            )
        return self._summary(losses, seen, time.perf_counter() - start)

    def _train_epoch(
        self, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler], order: List[int]
    ) -> List[float]:
        """One pass over the training examples in ``order``, in batches; returns each batch's loss.

        The optimizer steps every ``gradient_accumulation_steps`` batches and after the last one, each batch's loss
        scaled by the size of its group. Step losses stay on the device until the end of the epoch (one host
        transfer), so a GPU is not synchronised once per step.
        """
        size, accumulate = self.settings.batch_size, self.settings.gradient_accumulation_steps
        batches = [order[b : b + size] for b in range(0, len(order), size)]
        losses: List[torch.Tensor] = []
        optimizer.zero_grad(set_to_none=True)
        for k, index in enumerate(batches):
            with self.autocast():
                loss = self._batch_loss(index)
            group_size = min(accumulate, len(batches) - (k // accumulate) * accumulate)
            scaled = loss / group_size if group_size > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if (k + 1) % accumulate == 0 or k + 1 == len(batches):
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        return torch.stack(losses).float().cpu().tolist() if losses else []

    def _summary(self, losses: List[float], seen: int, seconds: float) -> Dict[str, float]:
        """:meth:`train`'s result from the batch losses, the examples seen and the seconds taken."""
        return {
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "n_examples": float(len(self._fit)),
            "examples_per_s": seen / seconds if seconds > 0 else 0.0,
            "seconds": seconds,
        }

    def eval_subset(self, n: Optional[int]) -> Optional[List[int]]:
        """A fixed subset of ``n`` test indices (seeded by ``settings.seed``), or None for the whole split."""
        if n is None or n >= self.n_test:
            return None
        generator = torch.Generator().manual_seed(self.settings.seed * 7_919 + 17)
        return sorted(torch.randperm(self.n_test, generator=generator)[:n].tolist())

    def save_head(self, path: str) -> None:
        """Saves the client-private head (atomic write); nothing without a head."""
        if not self.has_head:
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".tmp"
        save_file({k: v.cpu().contiguous() for k, v in self.model.head_state().items()}, tmp)
        os.replace(tmp, path)

    def load_head(self, path: str) -> bool:
        """Loads a head saved by :meth:`save_head`; returns False when there is no head or no such file."""
        if not self.has_head or not os.path.exists(path):
            return False
        self.model.load_head_state({k: v.to(self.device) for k, v in load_file(path).items()})
        return True

    def save_personalized(self, directory: str) -> str:
        """Saves the personalized adapter in peft format, the private head (if any) and the modality's files.

        ``PeftModel.from_pretrained(<base model>, directory)`` loads the adapter; ``head.safetensors`` (``head.weight``,
        ``head.bias``) sits beside it.

        Returns:
            The directory.
        """
        os.makedirs(directory, exist_ok=True)
        self.model.backbone.save_pretrained(directory)
        self.save_head(os.path.join(directory, HEAD_FILE))
        self._personalized_files(directory)
        return directory
