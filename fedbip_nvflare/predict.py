"""Inference with a site's personalized model saved by :meth:`TextSiteTrainer.save_personalized`.

A personalized model folder holds a peft LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``),
the site's private classification head (``head.safetensors``) and ``labels.json`` (task, label names, base
model). :func:`predict_file` loads it on top of the pre-trained base model and labels the texts of a file;
:func:`write_predictions` and :func:`format_predictions` store or print the result.
"""

import csv
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd
import torch

from fedbip_nvflare.client.trainer_base import HEAD_FILE, LABELS_FILE
from fedbip_nvflare.data.text import read_json_objects
from fedbip_nvflare.models.batching import pad_sequences
from fedbip_nvflare.models.resolve import resolve_model_path
from fedbip_nvflare.models.text import TextClassifier

ADAPTER_CONFIG_FILE = "adapter_config.json"
INPUT_EXTENSIONS = (".txt", ".csv", ".tsv", ".jsonl", ".json")
OUTPUT_EXTENSIONS = (".jsonl", ".csv")
PREDICTION_FIELDS = ("text", "label", "score")

_SEPARATORS = {".csv": ",", ".tsv": "\t"}


def read_folder_info(adapter_dir: str, info_file: str, required: Sequence[str], written_by: str) -> Dict[str, Any]:
    """The JSON object ``info_file`` of a personalized model folder, after checking the folder has its files.

    Args:
        adapter_dir: The folder.
        info_file: Its description file (``labels.json``, ``generation.json``).
        required: Further files it must hold besides ``adapter_config.json`` and ``info_file``.
        written_by: What writes such folders (named in the errors).

    Raises:
        FileNotFoundError: The folder or one of its files is missing.
        ValueError: ``info_file`` is not a JSON object.
    """
    if not os.path.isdir(adapter_dir):
        raise FileNotFoundError(
            f"personalized model folder not found: {adapter_dir}; pass the folder a site saved its personalized "
            f"model to ({written_by})"
        )
    needed = [ADAPTER_CONFIG_FILE, *required, info_file]
    for name in needed:
        if not os.path.isfile(os.path.join(adapter_dir, name)):
            raise FileNotFoundError(
                f"{adapter_dir} has no {name}: a personalized model folder needs {', '.join(needed)} (and the adapter "
                f"weights), as written by {written_by}"
            )
    path = os.path.join(adapter_dir, info_file)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object with 'base_model', got {info!r:.80}")
    return info


def base_model_of(adapter_dir: str, info_file: str, info: Dict[str, Any], model: Optional[str]) -> str:
    """``model`` if given, else the ``base_model`` that the folder's ``info_file`` names.

    Raises:
        ValueError: Neither names a base model.
    """
    base = model if model is not None else info.get("base_model")
    if not isinstance(base, str) or not base.strip():
        raise ValueError(
            f"{os.path.join(adapter_dir, info_file)} names no 'base_model': pass the base model the adapter was "
            "trained on (model=... / --model)"
        )
    return base


def attach_adapter(base_model: Any, adapter_dir: str, base_name: str) -> Any:
    """``PeftModel.from_pretrained(base_model, adapter_dir)`` for inference.

    Raises:
        ValueError: The adapter does not fit the base model (named ``base_name`` in the message).
    """
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ValueError(
            f"cannot load the adapter in {adapter_dir} onto base model {base_name!r}: {e}; pass the base model the "
            "adapter was trained on (model=... / --model)"
        ) from e


def load_personalized(
    adapter_dir: str, model: Optional[str] = None, device: Optional[str] = None
) -> Tuple[TextClassifier, Any, List[str]]:
    """Loads a personalized model folder written by ``TextSiteTrainer.save_personalized``.

    The base encoder (``base_model`` of ``labels.json``, or ``model``) is loaded with ``AutoModel``, the LoRA
    adapter with ``PeftModel.from_pretrained`` and the private head from ``head.safetensors``; the tokenizer is
    the base model's. Known hub ids resolve to their offline copies (:func:`resolve_model_path`).

    Args:
        adapter_dir: Folder with ``adapter_config.json``, ``adapter_model.safetensors``, ``head.safetensors``
            and ``labels.json``.
        model: Base model id or folder; overrides ``base_model`` of ``labels.json`` (e.g. when the model
            folder used in training has moved). It must be the model the adapter was trained on.
        device: torch device (default: CUDA if available, else CPU).

    Returns:
        ``(model, tokenizer, label_names)``; the model is in eval mode, and ``label_names[i]`` is the class
        of logit ``i``.

    Raises:
        FileNotFoundError: ``adapter_dir`` or one of its required files is missing.
        ValueError: ``labels.json`` is malformed or names no base model (and ``model`` is None), or the
            adapter or head does not fit the base model or the label names.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    info = read_folder_info(adapter_dir, LABELS_FILE, [HEAD_FILE], "TextSiteTrainer.save_personalized")
    label_names = read_label_names(adapter_dir, info)
    base = base_model_of(adapter_dir, LABELS_FILE, info, model)
    path = resolve_model_path(base)

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path)
    peft_backbone = attach_adapter(AutoModel.from_pretrained(path), adapter_dir, base)

    classifier = TextClassifier(peft_backbone, len(label_names))
    load_private_head(classifier, adapter_dir, base)
    classifier.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    classifier.eval()
    return classifier, tokenizer, label_names


def read_label_names(adapter_dir: str, info: Dict[str, Any]) -> List[str]:
    """``label_names`` of a classifier folder's ``labels.json`` (``info``), as strings.

    Raises:
        ValueError: Not a list of at least 2 names.
    """
    names = info.get("label_names")
    if not isinstance(names, list) or len(names) < 2:
        raise ValueError(
            f"{os.path.join(adapter_dir, LABELS_FILE)}: 'label_names' must be a list of at least 2 class names, "
            f"got {names!r:.80}"
        )
    return [str(n) for n in names]


def load_private_head(classifier: Any, adapter_dir: str, base: str) -> None:
    """Loads the folder's ``head.safetensors`` into ``classifier.head`` (an ``nn.Linear``).

    Raises:
        ValueError: The saved head's shapes differ from the classifier's (named with ``base``, the base model).
    """
    from safetensors.torch import load_file

    head = load_file(os.path.join(adapter_dir, HEAD_FILE))
    expected = {"head.weight": tuple(classifier.head.weight.shape), "head.bias": tuple(classifier.head.bias.shape)}
    found = {k: tuple(v.shape) for k, v in head.items()}
    if found != expected:
        raise ValueError(
            f"{os.path.join(adapter_dir, HEAD_FILE)} holds {found}, expected {expected} for "
            f"{classifier.head.out_features} labels on base model {base!r}: the head, {LABELS_FILE} and the base "
            "model must come from the same personalized model"
        )
    classifier.load_head_state(head)


def check_label_count(label_names: Sequence[str], num_classes: int) -> None:
    """Raises ValueError unless there is one label name per class of the model."""
    if len(label_names) != num_classes:
        raise ValueError(
            f"{len(label_names)} label names for a model with {num_classes} classes: the label names must be the "
            "ones the model was trained with"
        )


def top_labels(logits: torch.Tensor, label_names: Sequence[str]) -> List[Tuple[str, float]]:
    """``(label, softmax probability)`` of each row's arg-max logit.

    Raises:
        ValueError: The number of label names differs from the number of logits per row.
    """
    check_label_count(label_names, logits.shape[-1])
    scores, labels = torch.softmax(logits.float(), dim=-1).max(dim=-1)
    return [(str(label_names[int(y)]), float(p)) for y, p in zip(labels.tolist(), scores.tolist())]


def read_inputs(path: str) -> List[str]:
    """Reads the texts to classify from a file; the format is chosen by the extension.

    * ``.txt``: one text per non-empty line (surrounding whitespace stripped).
    * ``.csv`` / ``.tsv``: a header with a ``text`` column (matched case-insensitively); every row is one text,
      so predictions line up with the rows. Other columns (e.g. ``label``) are ignored.
    * ``.jsonl`` / ``.json``: one object with a ``text`` key per non-empty line; a ``.json`` file may instead
      hold a single JSON array of such objects. Other keys (e.g. ``label``) are ignored.

    Args:
        path: Input file.

    Returns:
        The texts, in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: An unsupported extension, a missing ``text`` column/key, malformed JSON, or no texts.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".txt":
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    elif ext in _SEPARATORS:
        df = pd.read_csv(path, sep=_SEPARATORS[ext], dtype=str, keep_default_na=False)
        cols = {str(c).strip().lower(): c for c in df.columns}
        if "text" not in cols:
            raise ValueError(f"{path}: missing column 'text'; found columns {list(df.columns)}")
        texts = df[cols["text"]].tolist()
    elif ext in (".jsonl", ".json"):
        texts = _read_json_texts(path)
    else:
        raise ValueError(f"{path}: unsupported input extension {ext!r}; use one of {', '.join(INPUT_EXTENSIONS)}")
    if not texts:
        raise ValueError(f"{path}: no texts to classify")
    return texts


def _read_json_texts(path: str) -> List[str]:
    texts = []
    for where, rec in read_json_objects(path):
        if not isinstance(rec, dict) or "text" not in rec:
            raise ValueError(f"{path}: {where}: expected an object with a 'text' key, got {rec!r:.80}")
        texts.append(str(rec["text"]))
    return texts


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@torch.no_grad()
def predict_logits(
    model: TextClassifier, tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 32
) -> torch.Tensor:
    """Logits of ``model`` for ``texts``, tokenised like in training (truncated to ``max_length`` tokens).

    Texts are batched by length to limit padding; the result is in input order.

    Args:
        model: A text classifier (put in eval mode by this call).
        tokenizer: The base model's tokenizer.
        texts: Texts to classify.
        max_length: Token truncation length.
        batch_size: Texts per forward pass.

    Returns:
        fp32 CPU tensor ``[len(texts), num_labels]``.

    Raises:
        ValueError: ``max_length`` or ``batch_size`` is not a positive int.
    """
    check_positive("max_length", max_length)
    check_positive("batch_size", batch_size)
    model.eval()
    texts = [str(t) for t in texts]
    logits = torch.zeros((len(texts), model.head.out_features), dtype=torch.float32)
    if not texts:
        return logits
    device = next(model.parameters()).device
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    pad_id = tokenizer.pad_token_id or 0
    for b in range(0, len(order), batch_size):
        index = order[b : b + batch_size]
        input_ids, mask = pad_sequences([ids[i] for i in index], pad_id)
        out = model(input_ids.to(device), mask.to(device))
        logits[torch.tensor(index)] = out.detach().float().cpu()
    return logits


def predict(
    model: TextClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    label_names: Sequence[str],
    max_length: int = 128,
    batch_size: int = 32,
) -> List[Dict[str, Any]]:
    """Classifies texts with a (personalized) text classifier.

    Args:
        model: A text classifier, e.g. from :func:`load_personalized`.
        tokenizer: The base model's tokenizer.
        texts: Texts to classify.
        label_names: Class names; ``label_names[i]`` is the class of logit ``i``.
        max_length: Token truncation length.
        batch_size: Texts per forward pass.

    Returns:
        One ``{"text": str, "label": str, "score": float}`` per text, in input order; ``score`` is the softmax
        probability of the predicted (arg-max) label, in (0, 1].

    Raises:
        ValueError: The number of label names differs from the model's number of classes, or a bad
            ``max_length`` / ``batch_size``.
    """
    check_label_count(label_names, model.head.out_features)
    logits = predict_logits(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    return [
        {"text": str(text), "label": label, "score": score}
        for text, (label, score) in zip(texts, top_labels(logits, label_names))
    ]


def predict_file(
    adapter_dir: str,
    input_path: str,
    model: Optional[str] = None,
    max_length: int = 128,
    batch_size: int = 32,
    device: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Classifies the texts of a file with a personalized model folder.

    Args:
        adapter_dir: Personalized model folder (see :func:`load_personalized`).
        input_path: Texts to classify (see :func:`read_inputs`).
        model: Base model id or folder overriding ``base_model`` of ``labels.json``.
        max_length: Token truncation length.
        batch_size: Texts per forward pass.
        device: torch device (default: CUDA if available, else CPU).

    Returns:
        One ``{"text", "label", "score"}`` dict per input text, in file order (see :func:`predict`).

    Raises:
        FileNotFoundError: The input file, the folder or one of its required files is missing.
        ValueError: A malformed input file or personalized model folder (see :func:`read_inputs`,
            :func:`load_personalized`).
    """
    check_positive("max_length", max_length)
    check_positive("batch_size", batch_size)
    texts = read_inputs(input_path)  # before loading the model: input errors surface at once
    classifier, tokenizer, label_names = load_personalized(adapter_dir, model=model, device=device)
    return predict(classifier, tokenizer, texts, label_names, max_length=max_length, batch_size=batch_size)


def write_predictions(
    rows: Sequence[Dict[str, Any]], output_path: str, fields: Sequence[str] = PREDICTION_FIELDS
) -> str:
    """Writes predictions as JSON lines (``.jsonl``) or CSV with a header (``.csv``).

    Each row is written with ``fields`` in this order. Parent folders are created; an existing file is replaced.

    Args:
        rows: Predictions from :func:`predict` / :func:`predict_file` (or responses from
            :func:`fedbip_nvflare.generate.generate_file`).
        output_path: Output file; its extension picks the format.
        fields: The keys of each row to write (default ``text``, ``label``, ``score``).

    Returns:
        ``output_path``.

    Raises:
        ValueError: An unsupported extension.
    """
    ext = os.path.splitext(output_path)[1].lower()
    if ext not in OUTPUT_EXTENSIONS:
        raise ValueError(
            f"{output_path}: unsupported output extension {ext!r}; use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
    records = [{k: row[k] for k in fields} for row in rows]
    with open(output_path, "w", encoding="utf-8", newline="") as f:
        if ext == ".jsonl":
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(records)
    return output_path


def format_predictions(rows: Sequence[Dict[str, Any]], max_text: int = 80, item: str = "text") -> str:
    """A plain-text table of predictions for printing: label, score (3 decimals) and text.

    Line breaks in a text are shown as spaces and texts longer than ``max_text`` characters are cut, ending
    with ``...``.

    Args:
        rows: Predictions from :func:`predict` / :func:`predict_file` (or image predictions).
        max_text: Maximum characters of text shown per row (at least 4).
        item: The key of what was classified (``"text"``, or ``"image"`` for image paths).

    Returns:
        The table, one line per prediction under a header line, without a trailing newline.
    """
    max_text = max(4, int(max_text))
    width = max([len("label")] + [len(str(row["label"])) for row in rows])
    lines = [f"{'label':<{width}}  {'score':>5}  {item}"]
    for row in rows:
        text = " ".join(str(row[item]).split())
        if len(text) > max_text:
            text = text[: max_text - 3] + "..."
        lines.append(f"{str(row['label']):<{width}}  {float(row['score']):.3f}  {text}")
    return "\n".join(lines)
