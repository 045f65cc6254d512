"""Checks shared by every modality's data configuration and task data."""

import hashlib
import json
from typing import Any, Collection, Dict, Mapping, Sequence

FILE_KEY = "train_path"


def checked_data_config(
    data: Mapping[str, Any],
    site_name: str,
    suite_keys: Collection[str],
    file_keys: Collection[str],
    files: str,
) -> Dict[str, Any]:
    """A copy of a site's data configuration, checked: exactly one of ``suite`` / ``train_path``, no unknown keys.

    Args:
        data: The site's data configuration (a built-in suite's, or the site's own files').
        site_name: The site's name (named in errors).
        suite_keys: Keys allowed with ``suite``.
        file_keys: Keys allowed with ``train_path``.
        files: What ``train_path`` points at, for the error message (e.g. "the site's own CSV/JSONL file").

    Raises:
        ValueError: Neither or both of ``suite`` and ``train_path``, or unknown keys (the allowed ones are listed).
    """
    data = dict(data or {})
    if ("suite" in data) == (FILE_KEY in data):
        raise ValueError(
            f"site {site_name}: data config needs exactly one of 'suite' (built-in offline suite) or '{FILE_KEY}' "
            f"({files}), got keys {sorted(data)}"
        )
    allowed = set(suite_keys) if "suite" in data else set(file_keys)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"site {site_name}: unknown data config keys {unknown}; allowed: {sorted(allowed)}")
    return data


def label_space_of(label_names: Sequence[str]) -> str:
    """A fingerprint of label names in order: sites with equal fingerprints share one label space."""
    return hashlib.sha256(json.dumps(list(label_names)).encode()).hexdigest()[:16]


class LabelledTask:
    """Mixin of a task-data dataclass with ``label_names``: the label-space fingerprint and the class count."""

    label_names: Sequence[str]

    @property
    def label_space(self) -> str:
        """A fingerprint of the label names in order: sites with equal fingerprints share one label space."""
        return label_space_of(self.label_names)

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)
