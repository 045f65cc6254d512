"""Layer grouping for FedBip-L: which tensors share one set of aggregation weights."""

import re
from typing import Callable, Dict, Iterable, Mapping, Union

_LAYER_INDEX = re.compile(r"\.\d+\.")

GroupSpec = Union[None, Mapping[str, str], Callable[[str], str]]


def layer_group(name: str) -> str:
    """Default FedBip-L group of a tensor name.

    The group is the name up to and including its first ``.<digits>.`` segment, so
    ``base_model.model.encoder.layer.3.attention.self.query.lora_A.weight`` belongs to
    ``base_model.model.encoder.layer.3.``. A name without such a segment is a group of its own.

    Args:
        name: Parameter name.

    Returns:
        The group key.
    """
    match = _LAYER_INDEX.search(name)
    return name[: match.end()] if match else name


def assign_groups(names: Iterable[str], groups: GroupSpec = None) -> Dict[str, str]:
    """Maps every tensor name to its group.

    Args:
        names: Tensor names.
        groups: None for the default :func:`layer_group`, a mapping name -> group (every name must
            be present), or a callable name -> group.

    Returns:
        ``{name: group}`` for every name, in the order given.

    Raises:
        KeyError: A mapping lacks one of the names.
    """
    if groups is None:
        return {n: layer_group(n) for n in names}
    if callable(groups):
        return {n: str(groups(n)) for n in names}
    missing = [n for n in names if n not in groups]
    if missing:
        raise KeyError(f"groups mapping has no group for tensors {missing[:5]} (and {max(0, len(missing) - 5)} more)")
    return {n: str(groups[n]) for n in names}
