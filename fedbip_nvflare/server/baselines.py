"""The baseline rules FedBip is compared with, run through the same server round: Local, oracle groups, FedAMP,
FedSA-LoRA, FedAvg followed by local fine-tuning.

Each wraps a weight function of ``fedbip_nvflare.core.baselines`` (an ``[N, N]`` row-stochastic matrix over the
round's clients) and mixes with ``core.combine``, heads only within a label space, like FedBip.
"""

from abc import abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch

from fedbip_nvflare.core import apply_update, combine, task_vector
from fedbip_nvflare.core.baselines import fedamp_weights, group_weights, local_weights
from fedbip_nvflare.models import is_lora_a
from fedbip_nvflare.server.rule import AggregationRule, Params, uniform_mean, with_heads


class WeightedUpdateRule(AggregationRule):
    """A rule that mixes the round's task vectors with a weight matrix: ``θ̄_i ← θ̄_i + Σ_k w_ik τ_k``.

    Subclasses give :meth:`weights`; the record holds the clients and the weights.
    """

    @abstractmethod
    def weights(self, clients: List[str], params: List[Params]) -> torch.Tensor:
        """``[N, N]`` row-stochastic weights for ``clients`` (``params``: their shared returned tensors)."""

    def mix_parameters(self) -> bool:
        """True: the weights mix the returned parameters themselves, not their task vectors (FedAMP)."""
        return False

    def apply(
        self,
        sent: Mapping[str, Params],
        returned: Mapping[str, Params],
        theta0_of: Callable[[Params], Params],
        shared: Optional[List[str]] = None,
        spaces: Optional[Dict[str, str]] = None,
    ) -> Tuple[Dict[str, Params], dict]:
        """See :meth:`AggregationRule.apply`."""
        clients = sorted(returned)
        shared = list(returned[clients[0]]) if shared is None else shared

        def mix(vectors: Mapping[str, Params], weights: torch.Tensor) -> Dict[str, Params]:
            mixed = combine({c: {n: vectors[c][n] for n in shared} for c in clients}, weights)
            return with_heads(mixed, vectors, weights, spaces)

        weights = self.weights(clients, [{n: returned[c][n] for n in shared} for c in clients])
        if self.mix_parameters():
            thetas = mix(returned, weights)
        else:
            updates = mix({c: task_vector(returned[c], sent[c]) for c in clients}, weights)
            thetas = {c: apply_update(sent[c], updates[c]) for c in clients}
        return thetas, {"clients": clients, "weights": weights.tolist()}


@dataclass(frozen=True)
class LocalRule(WeightedUpdateRule):
    """Local training: every client keeps only its own update (no mixing)."""

    name: ClassVar[str] = "local"

    def weights(self, clients: List[str], params: List[Params]) -> torch.Tensor:
        return local_weights(len(clients))


@dataclass(frozen=True)
class OracleGroupsRule(WeightedUpdateRule):
    """Uniform averaging of the updates within known client groups (the ground truth FedBip should find).

    Attributes:
        groups: ``{client: group}``; a client missing from it is a group of its own.

    Raises:
        ValueError: ``groups`` is not a dict.
    """

    name: ClassVar[str] = "oracle-groups"

    groups: Optional[Dict[str, str]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.groups, dict):
            raise ValueError("aggregation 'oracle-groups' needs aggregation_options={'groups': {client: group}}")

    def weights(self, clients: List[str], params: List[Params]) -> torch.Tensor:
        return group_weights(clients, self.groups)


@dataclass(frozen=True)
class FedAMPRule(WeightedUpdateRule):
    """FedAMP's attentive message passing on the raw federated parameters (see ``core.fedamp_weights``).

    Attributes:
        sigma: Temperature of the exponential kernel (> 0).
        self_weight: Weight a client keeps on its own parameters, in [0, 1].

    Raises:
        ValueError: ``sigma`` or ``self_weight`` out of range.
    """

    name: ClassVar[str] = "fedamp"

    sigma: float = 0.1
    self_weight: float = 0.5

    def __post_init__(self) -> None:
        fedamp_weights([{}], sigma=self.sigma, self_weight=self.self_weight)  # validates sigma and self_weight

    def weights(self, clients: List[str], params: List[Params]) -> torch.Tensor:
        return fedamp_weights(params, sigma=self.sigma, self_weight=self.self_weight)

    def mix_parameters(self) -> bool:
        return True


@dataclass(frozen=True)
class FedAvgFinetuneRule(WeightedUpdateRule):
    """FedAvg, then local fine-tuning within the same budget: every round but the last ``finetune_rounds`` averages
    the round's updates (``θ̄_i ← θ̄_i + mean_k τ_k``: one model, as FedAvg with equal example counts), and in the last
    ``finetune_rounds`` each client keeps its own update (its local epochs fine-tune the averaged model).

    Attributes:
        finetune_rounds: Rounds of local fine-tuning at the end (>= 1).

    Raises:
        ValueError: ``finetune_rounds`` is not an int >= 1.
    """

    name: ClassVar[str] = "fedavg-ft"
    needs_num_rounds: ClassVar[bool] = True

    finetune_rounds: int = 1

    def __post_init__(self) -> None:
        value = self.finetune_rounds
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"finetune_rounds must be an int >= 1, got {value!r}")

    def for_round(self, rnd: int, num_rounds: int) -> AggregationRule:
        """Averaging before the last ``finetune_rounds`` rounds, :class:`LocalRule` in them."""
        return LocalRule() if rnd >= num_rounds - self.finetune_rounds else self

    def weights(self, clients: List[str], params: List[Params]) -> torch.Tensor:
        n = len(clients)
        return torch.full((n, n), 1.0 / n)


@dataclass(frozen=True)
class FedSALoraRule(AggregationRule):
    """FedSA-LoRA (Guo et al., ICLR 2025): the LoRA A matrices are averaged over the round's clients, the B matrices
    (and heads) stay each client's own: ``θ̄_i^A ← θ̄_i^A + mean_k τ_k^A``, ``θ̄_i^B ← θ_i^B``.

    A learns what the clients share, B what is theirs. Every client starts from the same A (θ̄⁰), so A stays one
    global matrix, as in the paper. The record's ``weights`` are the A matrices' (uniform).
    """

    name: ClassVar[str] = "fedsa-lora"

    def apply(
        self,
        sent: Mapping[str, Params],
        returned: Mapping[str, Params],
        theta0_of: Callable[[Params], Params],
        shared: Optional[List[str]] = None,
        spaces: Optional[Dict[str, str]] = None,
    ) -> Tuple[Dict[str, Params], dict]:
        """See :meth:`AggregationRule.apply`."""
        clients = sorted(returned)
        shared = list(returned[clients[0]]) if shared is None else shared
        n = len(clients)
        taus = {c: task_vector(returned[c], sent[c]) for c in clients}
        mean_a = uniform_mean(taus, clients, [name for name in shared if is_lora_a(name)])
        own = {c: {name: taus[c][name] for name in shared if not is_lora_a(name)} for c in clients}
        updates = with_heads(own, taus, local_weights(n), spaces)
        return {c: apply_update(sent[c], {**updates[c], **mean_a}) for c in clients}, {
            "clients": clients,
            "weights": torch.full((n, n), 1.0 / n).tolist(),
        }
