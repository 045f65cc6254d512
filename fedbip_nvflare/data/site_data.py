"""A site's data configuration → its task data, for every modality: the one place the configuration is read.

A configuration names exactly one of a built-in suite (``"suite"``) or the site's own files (``"train_path"``),
checked by :func:`fedbip_nvflare.data.config.checked_data_config`. :data:`SITE_DATA` holds, per modality, the keys
each form allows and its two readers; the file readers share the held-out split and subsampling of
:mod:`fedbip_nvflare.data.split`.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional

from fedbip_nvflare.data.config import checked_data_config
from fedbip_nvflare.data.flan import FLAN_SUITES, load_flan_suite_site
from fedbip_nvflare.data.images import DEFAULT_IMAGE_SIZE, ImageTaskData, load_image_site_data
from fedbip_nvflare.data.instruct import InstructTaskData, load_instruct_files
from fedbip_nvflare.data.instruct_suite import SUITE as INSTRUCT_SUITE
from fedbip_nvflare.data.instruct_suite import load_instruct_suite_site
from fedbip_nvflare.data.suites import SUITES, load_suite_site
from fedbip_nvflare.data.text import TextTaskData, load_site_data, shift_labels, site_list
from fedbip_nvflare.data.vision_suite import VISION_SUITES, load_vision_suite_site

FILE_SPLIT_KEYS = frozenset({"train_path", "task", "test_fraction", "seed", "max_train", "max_test"})
"""Keys every file configuration allows (with ``test_path`` where the format has test files)."""


@dataclass(frozen=True)
class SiteDataFormat:
    """How one modality's sites configure their data.

    Attributes:
        suite_keys: Keys allowed with ``suite``.
        file_keys: Keys allowed with ``train_path``.
        files: What ``train_path`` points at (named in errors).
        from_suite: ``(checked config, site name) -> task data`` of a built-in suite.
        from_files: ``(checked config) -> task data`` of the site's own files.
        suites: The built-in suites ``suite`` may name.
        needs_num_clients: Suites whose configuration must carry ``num_clients`` (one pool split over all sites).
    """

    suite_keys: FrozenSet[str]
    file_keys: FrozenSet[str]
    files: str
    from_suite: Callable[[Mapping[str, Any], str], Any]
    from_files: Callable[[Mapping[str, Any]], Any]
    suites: FrozenSet[str] = frozenset()
    needs_num_clients: FrozenSet[str] = frozenset()


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _split_options(data: Mapping[str, Any], limit: Callable[[Any], Any] = _optional_int) -> Dict[str, Any]:
    """The file readers' shared options (held-out fraction, seed, subsample limits), with their defaults."""
    return {
        "test_fraction": float(data.get("test_fraction", 0.2)),
        "seed": int(data.get("seed", 0)),
        "max_train": limit(data.get("max_train")),
        "max_test": limit(data.get("max_test")),
    }


def _suite_options(data: Mapping[str, Any], n_train: int, n_test: int) -> Dict[str, Any]:
    """The suite readers' shared options (split sizes, seed, data folder), with the suite's default sizes."""
    return {
        "n_train": int(data.get("n_train", n_train)),
        "n_test": int(data.get("n_test", n_test)),
        "seed": int(data.get("seed", 0)),
        "data_dir": data.get("data_dir"),
    }


def _text_suite(data: Mapping[str, Any], site_name: str) -> TextTaskData:
    task = load_suite_site(
        data["suite"],
        site_name,
        **_suite_options(data, 300, 200),
        num_clients=_optional_int(data.get("num_clients")),
        group_size=int(data.get("group_size", 2)),
        alpha=float(data.get("alpha", 1.0)),
    )
    return shift_labels(task) if site_name in site_list(data.get("conflict_sites")) else task


def _text_files(data: Mapping[str, Any]) -> TextTaskData:
    return load_site_data(data["train_path"], data.get("test_path"), task=data.get("task"), **_split_options(data))


def _image_suite(data: Mapping[str, Any], site_name: str) -> ImageTaskData:
    return load_vision_suite_site(
        data["suite"],
        site_name,
        image_size=data.get("image_size", DEFAULT_IMAGE_SIZE),
        **_suite_options(data, 200, 200),
    )


def _image_files(data: Mapping[str, Any]) -> ImageTaskData:
    return load_image_site_data(
        data["train_path"],
        task=data.get("task"),
        image_size=data.get("image_size", DEFAULT_IMAGE_SIZE),
        **_split_options(data, limit=lambda value: value),  # checked as given: "max_train must be an int >= 1"
    )


def _instruct_suite(data: Mapping[str, Any], site_name: str) -> InstructTaskData:
    if data["suite"] in FLAN_SUITES:
        return load_flan_suite_site(
            data["suite"],
            site_name,
            max_instruction_words=int(data.get("max_instruction_words", 10_000)),
            **_suite_options(data, 300, 200),
        )
    return load_instruct_suite_site(
        data["suite"],
        site_name,
        max_input_words=int(data.get("max_input_words", 64)),
        **_suite_options(data, 64, 32),
    )


def _instruct_files(data: Mapping[str, Any]) -> InstructTaskData:
    return load_instruct_files(data["train_path"], data.get("test_path"), task=data.get("task"), **_split_options(data))


SITE_DATA: Dict[str, SiteDataFormat] = {
    "text": SiteDataFormat(
        suite_keys=frozenset(
            {"suite", "n_train", "n_test", "seed", "data_dir", "num_clients", "group_size", "alpha", "conflict_sites"}
        ),
        file_keys=FILE_SPLIT_KEYS | {"test_path"},
        files="the site's own CSV/JSONL file",
        from_suite=_text_suite,
        from_files=_text_files,
        suites=frozenset(SUITES),
        needs_num_clients=frozenset({"label-skew"}),
    ),
    "vision": SiteDataFormat(
        suite_keys=frozenset({"suite", "n_train", "n_test", "seed", "data_dir", "image_size"}),
        file_keys=FILE_SPLIT_KEYS | {"image_size"},
        files="the site's image folder or .npz file, e.g. 'vision-domains'",
        from_suite=_image_suite,
        from_files=_image_files,
        suites=frozenset(VISION_SUITES),
    ),
    "causal-lm": SiteDataFormat(
        suite_keys=frozenset(
            {"suite", "n_train", "n_test", "seed", "data_dir", "max_input_words", "max_instruction_words"}
        ),
        file_keys=FILE_SPLIT_KEYS | {"test_path"},
        files="the site's own JSONL file of instruction/input/output records",
        from_suite=_instruct_suite,
        from_files=_instruct_files,
        suites=frozenset({INSTRUCT_SUITE, *FLAN_SUITES}),
    ),
}
"""Per modality (the keys of :data:`fedbip_nvflare.modalities.MODALITIES`), how its sites configure their data."""


def load_task_data(data: Optional[Mapping[str, Any]], site_name: str, modality: str = "text") -> Any:
    """A site's task data from its data configuration.

    Args:
        data: The site's data configuration, one of:

            * text: ``{"suite": "text-tasks", "n_train": 300, "n_test": 200, "seed": 0}`` (a built-in offline
              suite, see :func:`fedbip_nvflare.data.load_suite_site`; the site's name picks its data), optionally
              with ``"data_dir"`` and the suite options ``"num_clients"`` (int, required by ``label-skew``),
              ``"group_size"`` (int, ``text-groups``, default 2), ``"alpha"`` (float, ``label-skew``, default 1.0)
              and ``"conflict_sites"`` (sites whose labels are shifted by one, ``"site-9,site-10"`` or a list, see
              :func:`fedbip_nvflare.data.shift_labels`); or ``{"train_path", "test_path", "task", "test_fraction",
              "max_train", "max_test", "seed"}`` (the site's own CSV/JSONL files with ``text`` and ``label``).
            * vision: ``{"suite": "vision-domains", "n_train": 200, "n_test": 200, "seed": 0, "image_size": 64,
              "data_dir": None}`` (the site's name picks its client), or ``{"train_path": FOLDER_OR_NPZ, "task",
              "image_size", "test_fraction", "seed", "max_train", "max_test"}`` (see
              :func:`fedbip_nvflare.data.images.load_image_site_data`).
            * causal-lm: ``{"suite": "instruct-tasks", "n_train": 64, "n_test": 32, "seed": 0,
              "max_input_words": 64}`` (see :mod:`fedbip_nvflare.data.instruct_suite`; optional ``"data_dir"``),
              ``{"suite": "flan-8" | "flan-pairs", "data_dir", "n_train", "n_test", "seed",
              "max_instruction_words"}`` (see :mod:`fedbip_nvflare.data.flan`), or ``{"train_path", "test_path",
              "task", "test_fraction", "max_train", "max_test", "seed"}`` (the site's own JSONL files, see
              :func:`fedbip_nvflare.data.instruct.read_instruct_file`).
        site_name: This site's name.
        modality: What the site trains (a key of :data:`SITE_DATA`).

    Returns:
        The site's task data (``TextTaskData``, ``ImageTaskData`` or ``InstructTaskData``).

    Raises:
        ValueError: An unknown modality, neither or both of ``suite`` and ``train_path``, unknown keys (the allowed
            ones are listed), or invalid options (e.g. ``label-skew`` without ``num_clients``).
        FileNotFoundError: A file the configuration names is missing.
    """
    data = check_data_config(data, modality, site_name)
    form = SITE_DATA[modality]
    return form.from_suite(data, site_name) if "suite" in data else form.from_files(data)


def check_data_config(
    data: Optional[Mapping[str, Any]], modality: str = "text", site_name: str = "every site"
) -> Dict[str, Any]:
    """A checked copy of a data configuration: its keys, and that its suite is the modality's.

    Cheap (nothing is read), so a recipe checks its configurations when it is built; what only a site can check
    (its files, its suite's sizes) is left to the readers.

    Args:
        data: The data configuration (see :func:`load_task_data`).
        modality: What the sites train (a key of :data:`SITE_DATA`).
        site_name: Whose configuration it is (named in errors).

    Returns:
        A copy of the configuration.

    Raises:
        ValueError: What :func:`load_task_data` raises for bad keys, a suite of another modality (naming it), an
            unknown suite, or a suite that needs ``num_clients`` without it.
    """
    if modality not in SITE_DATA:
        raise ValueError(f"unknown modality {modality!r}; valid modalities: {sorted(SITE_DATA)}")
    form = SITE_DATA[modality]
    data = checked_data_config(data, site_name, form.suite_keys, form.file_keys, form.files)
    suite = data.get("suite")
    if suite is None or suite in form.suites:
        if suite in form.needs_num_clients and data.get("num_clients") is None:
            raise ValueError(
                f"suite {suite!r} splits one pool over all sites: its data config needs 'num_clients' (the number "
                "of sites)"
            )
        return data
    owners = [m for m, f in SITE_DATA.items() if suite in f.suites]
    if not owners:
        raise ValueError(f"unknown {modality} suite {suite!r}; {modality} suites: {sorted(form.suites)}")
    fix = f"it is a {owners[0]} suite: use modality={owners[0]!r}"
    raise ValueError(f"suite {suite!r} is not a {modality} suite ({fix}); {modality} suites: {sorted(form.suites)}")


def load_image_task_data(data: Optional[Mapping[str, Any]], site_name: str) -> ImageTaskData:
    """The vision modality's site data: :func:`load_task_data` with ``modality="vision"``."""
    return load_task_data(data, site_name, "vision")


def load_instruct_task_data(data: Optional[Mapping[str, Any]], site_name: str) -> InstructTaskData:
    """The causal-lm modality's site data: :func:`load_task_data` with ``modality="causal-lm"``."""
    return load_task_data(data, site_name, "causal-lm")
