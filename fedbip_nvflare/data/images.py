"""Site image-classification data: the containers the image trainer consumes, preprocessing, and site files.

A site's own data is an image folder (``<root>/<label>/<file>``, optionally split into ``<root>/train/<label>/...``
and ``<root>/test/<label>/...``) or an ``.npz`` file with ``x``, ``y`` (optionally ``x_test``, ``y_test``). Every
image is made RGB (grey gets 3 equal channels) and ``image_size`` × ``image_size`` (the shorter side resized, then a
centre crop), and kept as uint8; :func:`fedbip_nvflare.models.pixels.normalize` turns a split into the model's
float input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbip_nvflare.data.config import LabelledTask
from fedbip_nvflare.data.split import split_indices

DEFAULT_IMAGE_SIZE = 64
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class ImageSplit:
    """One split of an image-classification task.

    Attributes:
        images: uint8 ``[N, S, S, 3]`` RGB images.
        labels: int64 ``[N]`` class indices into the task's ``label_names``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, S, S, 3], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageTaskData(LabelledTask):
    """A site's image task: its name, label space and disjoint train/test splits.

    Attributes:
        task: Task name.
        label_names: Class names; label ``i`` means ``label_names[i]``.
        train: Training split.
        test: Evaluation split.
    """

    task: str
    label_names: list[str]
    train: ImageSplit
    test: ImageSplit

    @property
    def image_size(self) -> int:
        """Side of the (square) images."""
        return int(self.train.images.shape[1])


# -- preprocessing -----------------------------------------------------------------------------------------
def _check_size(image_size: Any) -> int:
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be an int in [8, 1024], got {image_size!r}")
    return int(image_size)


def fit_image(image: Any, image_size: int) -> np.ndarray:
    """One image as uint8 ``[S, S, 3]``: RGB, shorter side resized to ``S`` (bilinear), centre-cropped.

    Args:
        image: A PIL image, or an array ``[H, W]`` / ``[H, W, 1|3]`` (uint8, or float in [0, 1]).
        image_size: The side ``S``.
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = _to_uint8(np.asarray(image))
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(array)
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (image_size, image_size):
        scale = image_size / min(w, h)
        image = image.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - image_size) // 2, (h - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype=np.uint8)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0 or np.isnan(x).any()):
            raise ValueError("float images must hold values in [0, 1]; pass uint8 (0-255) for other ranges")
        return np.round(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"integer images must hold values in [0, 255], got [{x.min()}, {x.max()}]")
        return x.astype(np.uint8)
    raise ValueError(f"images must be uint8 or float arrays, got dtype {x.dtype}")


def fit_images(images: np.ndarray | Sequence[Any], image_size: int) -> np.ndarray:
    """Many images (an array ``[N, H, W]``, ``[N, H, W, 1|3]`` or ``[N, 1|3, H, W]``, or a list) as uint8
    ``[N, S, S, 3]`` (see :func:`fit_image`)."""
    image_size = _check_size(image_size)
    if isinstance(images, np.ndarray):
        if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
            images = images.transpose(0, 2, 3, 1)  # channels first
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise ValueError(
                f"images must be [N, H, W] (grey), [N, H, W, C] or [N, C, H, W] with C in (1, 3), got {images.shape}"
            )
        images = _to_uint8(images)
    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = fit_image(image, image_size)
    return out


# -- site files --------------------------------------------------------------------------------------------
def _image_files(root: str) -> tuple[list[str], list[str]]:
    """``(paths, label names)`` of the images in ``root/<label>/``, sorted."""
    paths, labels = [], []
    for label in sorted(os.listdir(root)):
        folder = os.path.join(root, label)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name)):
                paths.append(os.path.join(folder, name))
                labels.append(label)
    if not paths:
        raise ValueError(
            f"{root}: no images found; an image folder holds one sub-folder per class with image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) in it: <root>/<label>/<file>"
        )
    return paths, labels


def read_images(paths: Sequence[str], image_size: int) -> np.ndarray:
    """Image files as uint8 ``[N, image_size, image_size, 3]`` (resized and centre-cropped like site data, grey
    and RGBA as RGB).

    Raises:
        ValueError: A file is not a readable image (named).
    """
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                out[i] = fit_image(image, image_size)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: not a readable image: {e}") from e
    return out


def _raw_from_folder(root: str) -> tuple[list[str], list[str], list[str] | None, list[str] | None]:
    splits = [os.path.join(root, s) for s in ("train", "test")]
    if os.path.isdir(splits[0]) and os.path.isdir(splits[1]):
        return (*_image_files(splits[0]), *_image_files(splits[1]))
    if os.path.isdir(splits[0]) or os.path.isdir(splits[1]):
        raise ValueError(
            f"{root}: has only one of train/ and test/; give both (<root>/train/<label>/..., <root>/test/<label>/...) "
            "or put the class folders directly in the root for a seeded split"
        )
    return (*_image_files(root), None, None)


def _raw_from_npz(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; an .npz needs x, y (optionally x_test, y_test)")
        if ("x_test" in keys) != ("y_test" in keys):
            raise ValueError(f"{path}: x_test and y_test go together; found only one of them")
        arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test") if k in keys}
    for x, y in (("x", "y"), ("x_test", "y_test")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise ValueError(f"{path}: {x} has {len(arrays[x])} images but {y} has {len(arrays[y])} labels")
        if y in arrays and arrays[y].ndim != 1:
            raise ValueError(f"{path}: {y} must be one label per image (1-D), got shape {arrays[y].shape}")
    return arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test")


def _label_strings(y: np.ndarray) -> list[str]:
    return [str(v) for v in y.tolist()]


def _sorted_labels(names: set[str]) -> list[str]:
    """Class names sorted numerically when they are all integers (``"2" < "10"``), else as strings."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def load_image_site_data(
    path: str,
    task: str | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> ImageTaskData:
    """Load a site's image task from its own files.

    Args:
        path: An image folder (``<root>/<label>/<file>``, or ``<root>/train/<label>/...`` and
            ``<root>/test/<label>/...``) or an ``.npz`` file with ``x`` (``[N, H, W]``, ``[N, H, W, 1|3]`` or
            ``[N, 1|3, H, W]``; uint8, or float in [0, 1]) and ``y`` (labels, numbers or strings), optionally
            ``x_test`` and ``y_test``.
        task: Task name; defaults to the folder's or file's name.
        image_size: Side of the square images the site trains on.
        test_fraction: Held-out fraction of each class when there is no test split, in (0, 1).
        seed: Seed of the held-out split and of the subsampling.
        max_train: Keep at most this many training images (random, deterministic for ``seed``).
        max_test: Keep at most this many test images.

    Returns:
        The task, with ``label_names`` the sorted training labels (numerically if all are integers).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Malformed files, no images, a bad option, or test labels that the training split lacks.
    """
    image_size = _check_size(image_size)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image data not found: {path} (give an image folder or an .npz file)")
    if os.path.isdir(path):
        train_items, train_str, test_items, test_str = _raw_from_folder(path)
    elif path.lower().endswith(".npz"):
        train_items, y, test_items, y_test = _raw_from_npz(path)
        train_str, test_str = _label_strings(y), None if y_test is None else _label_strings(y_test)
    else:
        raise ValueError(f"{path}: unsupported image data; give an image folder (<root>/<label>/<file>) or an .npz")
    label_names = _sorted_labels(set(train_str))
    index = {name: i for i, name in enumerate(label_names)}
    train_y = np.array([index[s] for s in train_str], dtype=np.int64)
    test_y = train_y
    if test_str is not None:
        unknown = sorted(set(test_str) - set(label_names))
        if unknown:
            raise ValueError(f"{path}: test labels {unknown[:5]} do not occur in the training split")
        test_y = np.array([index[s] for s in test_str], dtype=np.int64)
    else:  # hold out part of the training images
        test_items = train_items
    n_test = None if test_str is None else len(test_y)
    split = split_indices(train_y, len(label_names), n_test, test_fraction, seed, max_train, max_test)
    train_idx, test_idx = split.train, split.test
    if len(test_idx) == 0:
        raise ValueError(f"{path}: no test images (every class has a single image); add images or a test split")
    name = task or os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return ImageTaskData(
        name,
        label_names,
        ImageSplit(_fitted(train_items, train_idx, image_size), train_y[train_idx]),
        ImageSplit(_fitted(test_items, test_idx, image_size), test_y[test_idx]),
    )


def _fitted(items: Sequence[str] | np.ndarray, idx: np.ndarray, image_size: int) -> np.ndarray:
    """The images ``idx`` of a list of files or of an array, as uint8 ``[len(idx), S, S, 3]``."""
    if isinstance(items, np.ndarray):
        return fit_images(items[idx], image_size)
    return read_images([items[i] for i in idx], image_size)
