"""The registry of aggregation rules: method name → rule class, and building a rule from a name and options.

Adding a method: one :class:`~fedbip_nvflare.server.rule.AggregationRule` subclass (a dataclass whose fields are
its options) and one ``RULES`` entry (or :func:`register_rule`). Everything that takes a rule (``FedBipController``,
``FedBipModelAggregator``, ``FedBipRecipe``, the benchmarks) then takes it by name.
"""

from typing import Any, Dict, Type, Union

from fedbip_nvflare.server.baselines import FedAMPRule, FedAvgFinetuneRule, FedSALoraRule, LocalRule, OracleGroupsRule
from fedbip_nvflare.server.fedavg import FedAvgRule
from fedbip_nvflare.server.rule import AggregationRule, FedBipRule

RULES: Dict[str, Type[AggregationRule]] = {
    "fedbip": FedBipRule,
    "local": LocalRule,
    "fedamp": FedAMPRule,
    "oracle-groups": OracleGroupsRule,
    "fedavg": FedAvgRule,
    "fedsa-lora": FedSALoraRule,
    "fedavg-ft": FedAvgFinetuneRule,
}


def register_rule(rule_class: Type[AggregationRule]) -> Type[AggregationRule]:
    """Adds a rule class under its ``name`` (usable as a class decorator); returns the class."""
    if not (isinstance(rule_class, type) and issubclass(rule_class, AggregationRule)) or not rule_class.name:
        raise ValueError(f"a rule must be an AggregationRule subclass with a name, got {rule_class!r}")
    RULES[rule_class.name] = rule_class
    return rule_class


def make_rule(name: str, **options: Any) -> AggregationRule:
    """The rule registered as ``name``, built with ``options``.

    Raises:
        ValueError: An unknown name; an option the rule does not take (an option of another rule names that
            rule); or a bad option value (the rule's own message).
    """
    if name not in RULES:
        raise ValueError(f"aggregation must be one of {tuple(RULES)}, got {name!r}")
    rule_class = RULES[name]
    rule_class.check_options(options, [c for c in RULES.values() if c is not rule_class])
    return rule_class(**options)


def as_rule(rule: Union[AggregationRule, str, None], default: str = "fedbip") -> AggregationRule:
    """``rule`` itself, the registered rule of that name with default options, or (None) the ``default`` one.

    Raises:
        ValueError: Not a rule or a registered name.
    """
    if isinstance(rule, AggregationRule):
        return rule
    if rule is None or isinstance(rule, str):
        return make_rule(default if rule is None else rule)
    raise ValueError(f"rule must be an AggregationRule or a registered name {tuple(RULES)}, got {rule!r}")
