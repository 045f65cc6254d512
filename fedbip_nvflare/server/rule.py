"""The aggregation-rule interface, and FedBip's rule (the server round shared by the controller and the drop-in).

An aggregation method is one :class:`AggregationRule` object: it validates its own options once, at
construction, and turns a round's sent and returned parameters into every accepted client's next θ̄_i.
``fedbip_nvflare.server.rules`` maps method names to rule classes.
"""

import dataclasses
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch

from fedbip_nvflare.core import (
    NEGATIVE_POLICIES,
    SIMILARITY_ON,
    apply_update,
    clip_to_median_norm,
    combine,
    combine_by_space,
    fedbip_aggregate,
    task_vector,
)
from fedbip_nvflare.models import is_head, is_lora_a

Params = Dict[str, torch.Tensor]
logger = logging.getLogger(__name__)

KEEP_CENTERED_WARNING = (
    "negative='keep' with center_similarity: centred cosines of a round sum to about 0, so weight rows nearly "
    "cancel and 'keep' scales their updates by sum|S| / sum S (unbounded); use negative='keep-bounded' or 'clip' "
    "unless this amplification is what you study"
)


class AggregationRule(ABC):
    """How the server turns a round's results into every accepted client's next θ̄_i.

    A rule is a dataclass whose fields are its options (validated in ``__post_init__`` with messages naming the
    option), so NVFlare's job export, which rebuilds a component from same-named attributes, can carry it
    whole. Adding a method is one subclass and one entry in ``fedbip_nvflare.server.rules.RULES``.

    Class attributes:
        name: The method's registry name (and its name in results unless :meth:`method_name` refines it).
        nvflare_fedavg: The rule runs as NVFlare's own FedAvg workflow (one global model), not through
            ``FedBipController`` or the drop-in aggregator; ``FedBipRecipe`` asks this to pick the workflow.
        exclusive_options: ``{option: message}`` for options only this rule takes: the message (formatted with
            ``name``, the rule asked for) is the error when another rule is given the option.
        needs_num_rounds: The rule changes with the round (see :meth:`for_round`), so it runs only where the number
            of rounds is known (``FedBipController``), not in the drop-in aggregator.
    """

    name: ClassVar[str] = ""
    nvflare_fedavg: ClassVar[bool] = False
    needs_num_rounds: ClassVar[bool] = False
    exclusive_options: ClassVar[Dict[str, str]] = {}

    @abstractmethod
    def apply(
        self,
        sent: Mapping[str, Params],
        returned: Mapping[str, Params],
        theta0_of: Callable[[Params], Params],
        shared: Optional[List[str]] = None,
        spaces: Optional[Dict[str, str]] = None,
    ) -> Tuple[Dict[str, Params], dict]:
        """Computes every accepted client's next θ̄_i.

        Args:
            sent: ``{client: θ̄_i}`` each client trained from this round.
            returned: ``{client: θ_i}``, the accepted FULL parameters (same names and shapes as ``sent``).
            theta0_of: θ̄⁰ for a client's parameters.
            shared: Tensors every client combines (None: all); with ``spaces``, the others are heads.
            spaces: ``{client: label space}``: heads combine only within a label space (None: no such heads).

        Returns:
            ``({client: next θ̄_i}, record)``: the record (JSON-able) holds at least the sorted ``clients`` and the
            ``weights`` matrix as lists, and is appended to the round log.
        """

    def method_name(self) -> str:
        """The method's name in results (e.g. "fedbip-l" for FedBip's layer-wise option)."""
        return self.name

    def for_round(self, rnd: int, num_rounds: int) -> "AggregationRule":
        """The rule that aggregates round ``rnd`` (0-based) of ``num_rounds``: this one, unless it changes with the
        round (``needs_num_rounds``)."""
        return self

    def options(self) -> Dict[str, Any]:
        """The rule's options as recorded in results (its dataclass fields)."""
        return dataclasses.asdict(self)

    @classmethod
    def option_names(cls) -> List[str]:
        """The options this rule takes (its constructor arguments)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_options(cls, options: Mapping[str, Any], others: List[type]) -> None:
        """Rejects options this rule does not take, before construction.

        Args:
            options: The options asked for.
            others: The other registered rule classes (their ``exclusive_options`` give the messages).

        Raises:
            ValueError: An option of another rule (with that rule's message), or an unknown one.
        """
        unknown = sorted(set(options) - set(cls.option_names()))
        for option in unknown:
            for other in others:
                if option in other.exclusive_options:
                    raise ValueError(other.exclusive_options[option].format(name=cls.name))
        if unknown:
            raise ValueError(f"aggregation {cls.name!r} takes options {sorted(cls.option_names())}, got {unknown}")


def matrix_json(m) -> object:
    """A similarity/weight matrix (or ``{group: matrix}``) as nested lists for the round logs."""
    return {g: v.tolist() for g, v in m.items()} if isinstance(m, dict) else m.tolist()


def with_heads(
    mixed: Dict[str, Params], vectors: Dict[str, Params], weights: torch.Tensor, spaces: Optional[Dict[str, str]]
) -> Dict[str, Params]:
    """``mixed`` plus the head tensors of ``vectors`` combined within each label space (``spaces`` None: as is)."""
    if spaces is None:
        return mixed
    heads = combine_by_space({c: {n: t for n, t in vectors[c].items() if is_head(n)} for c in mixed}, weights, spaces)
    return {c: {**mixed[c], **heads[c]} for c in mixed}


@dataclass(frozen=True)
class FedBipRule(AggregationRule):
    """The server's FedBip rule: ``θ̄_i ← θ̄_i + Σ_k p_ik τ_k`` over the round's accepted clients.

    The paper's variants are its options: FedBip-L (``layerwise``), cumulative similarity, and, beyond the paper,
    centred similarity and a norm bound.

    Attributes:
        layerwise: FedBip-L (similarities and weights per layer group).
        negative: Negative-cosine policy, "clip", "keep" or "keep-bounded" (see ``core.aggregation_weights``).
        similarity_on: "round" (cosine of this round's τ) or "cumulative" (of θ_i − θ̄⁰).
        center_similarity: Measure cosines after removing the round's mean vector (the method is then named
            with "-centered").
        norm_bound: Clip every task vector to this multiple of the round's median norm before combining them
            (None: no bound).
        streaming: Compute each client's update only when its θ̄_i is built, then drop it (peak memory: one
            update instead of N; N passes over the task vectors instead of one).
        share_lora_a: Beyond the paper, after FedSA-LoRA: the LoRA A matrices are averaged over the round's
            clients (one global A), and FedBip's similarities and weights are taken over the other shared tensors
            (B, and any non-LoRA ones) and mix only those (the method is then named with "-sa"). A model without
            LoRA A matrices is aggregated as without this option.

    Raises:
        ValueError: An unknown negative policy or similarity_on, or a norm bound that is not a positive number.
    """

    name: ClassVar[str] = "fedbip"
    exclusive_options: ClassVar[Dict[str, str]] = {
        "norm_bound": "norm_bound applies to FedBip's rule only, not to aggregation {name!r}",
        "share_lora_a": "share_lora_a applies to FedBip's rule only (aggregation 'fedsa-lora' always shares A), "
        "not to aggregation {name!r}",
    }

    layerwise: bool = False
    negative: str = "clip"
    similarity_on: str = "round"
    center_similarity: bool = False
    norm_bound: Optional[float] = None
    streaming: bool = False
    share_lora_a: bool = False

    def __post_init__(self) -> None:
        if self.negative not in NEGATIVE_POLICIES:
            raise ValueError(f"negative must be one of {NEGATIVE_POLICIES}, got {self.negative!r}")
        if self.similarity_on not in SIMILARITY_ON:
            raise ValueError(f"similarity_on must be one of {SIMILARITY_ON}, got {self.similarity_on!r}")
        if self.norm_bound is not None:
            clip_to_median_norm({}, self.norm_bound)  # validates it
        for flag in ("layerwise", "center_similarity", "streaming", "share_lora_a"):
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        if self.negative == "keep" and self.center_similarity:
            logger.warning(KEEP_CENTERED_WARNING)

    def method_name(self) -> str:
        """fedbip or fedbip-l, then "-cumulative", "-centered" and "-sa" for those options."""
        name = "fedbip-l" if self.layerwise else "fedbip"
        name += "-cumulative" if self.similarity_on == "cumulative" else ""
        name += "-centered" if self.center_similarity else ""
        return name + ("-sa" if self.share_lora_a else "")

    def apply(
        self,
        sent: Mapping[str, Params],
        returned: Mapping[str, Params],
        theta0_of: Callable[[Params], Params],
        shared: Optional[List[str]] = None,
        spaces: Optional[Dict[str, str]] = None,
    ) -> Tuple[Dict[str, Params], dict]:
        """See :meth:`AggregationRule.apply`; the record adds the similarity matrix (and ``clipped`` scales)."""
        clients = sorted(returned)
        shared = list(returned[clients[0]]) if shared is None else shared
        averaged = [n for n in shared if is_lora_a(n)] if self.share_lora_a else []
        shared = [n for n in shared if not is_lora_a(n)] if averaged else shared
        taus = {c: task_vector(returned[c], sent[c]) for c in clients}
        scales: Dict[str, float] = {}
        if self.norm_bound is not None:
            taus, scales = clip_to_median_norm(taus, self.norm_bound)
        sim_vectors = None
        if self.similarity_on == "cumulative":
            sim_vectors = {}
            for c in clients:
                start = theta0_of(returned[c])
                sim_vectors[c] = task_vector({n: returned[c][n] for n in shared}, {n: start[n] for n in shared})
        result = fedbip_aggregate(
            {c: {n: taus[c][n] for n in shared} for c in clients},
            layerwise=self.layerwise,
            negative=self.negative,
            similarity_vectors=sim_vectors,
            center=self.center_similarity,
            streaming=self.streaming,
        )
        weights = result.weights
        if isinstance(weights, dict):  # layer-wise: heads use the mean of the groups' weights
            weights = torch.stack(list(weights.values())).mean(dim=0)
        heads = with_heads({c: {} for c in clients}, taus, weights, spaces)
        mean_a = uniform_mean(taus, clients, averaged)
        thetas = {c: apply_update(sent[c], {**result.updates[c], **heads[c], **mean_a}) for c in clients}
        record = {
            "clients": clients,
            "similarity": matrix_json(result.similarity),
            "weights": matrix_json(result.weights),
        }
        if self.norm_bound is not None:
            record["clipped"] = scales
        if averaged:
            record["averaged"] = len(averaged)
        return thetas, record


def uniform_mean(taus: Mapping[str, Params], clients: List[str], names: List[str]) -> Params:
    """``{name: mean over clients of τ[name]}`` for ``names`` (empty for none)."""
    if not names:
        return {}
    n = len(clients)
    mixed = combine({c: {name: taus[c][name] for name in names} for c in clients}, torch.full((1, n), 1.0 / n))
    return mixed[clients[0]]
