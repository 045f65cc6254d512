"""Image site data: folders and .npz files, preprocessing, the vision-domains suite (real offline data), errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from fedbip_nvflare.data.images import fit_image, fit_images
from fedbip_nvflare.data.site_data import load_image_task_data
from fedbip_nvflare.data.vision_suite import (
    VISION_CLIENTS,
    _draw,
    load_vision_suite_site,
    vision_suite_groups,
)
from fedbip_nvflare.models.pixels import IMAGENET_MEAN, IMAGENET_STD, normalize

SUITE = {"suite": "vision-domains", "n_train": 40, "n_test": 30, "seed": 0, "image_size": 16}


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(root, per_class=5, labels=("cat", "dog", "eel"), sizes=((20, 30), (12, 12), (9, 40))):
    """Images of three kinds: RGB, grey and RGBA, of different sizes; the class is encoded in the brightness."""
    rng = np.random.default_rng(0)
    for c, label in enumerate(labels):
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            value = 40 + 80 * c
            kind = i % 3
            if kind == 0:
                array = np.full((h, w, 3), value, dtype=np.uint8)
            elif kind == 1:
                array = np.full((h, w), value, dtype=np.uint8)
            else:
                array = np.concatenate([np.full((h, w, 3), value, np.uint8), np.full((h, w, 1), 255, np.uint8)], -1)
            array[0, 0] = rng.integers(0, 255)  # images differ within a class
            _save(root / label / f"{i}.png", array)
    return root


def test_folder_with_seeded_stratified_split(tmp_path):
    root = _folder(tmp_path / "pets")
    data = load_image_task_data({"train_path": str(root), "image_size": 24, "test_fraction": 0.4, "seed": 1}, "site-1")
    assert data.task == "pets" and data.label_names == ["cat", "dog", "eel"]
    assert data.train.images.shape == (9, 24, 24, 3) and data.test.images.shape == (6, 24, 24, 3)
    assert data.train.images.dtype == np.uint8
    assert np.bincount(data.test.labels).tolist() == [2, 2, 2]
    for split in (data.train, data.test):
        # centre pixels carry the class brightness, in every channel (grey and RGBA became RGB)
        centre = split.images[:, 12, 12, :].astype(int)
        assert (centre == (40 + 80 * split.labels)[:, None]).all()
    again = load_image_task_data({"train_path": str(root), "image_size": 24, "test_fraction": 0.4, "seed": 1}, "site-1")
    assert np.array_equal(again.test.images, data.test.images)
    other = load_image_task_data({"train_path": str(root), "image_size": 24, "test_fraction": 0.4, "seed": 2}, "site-1")
    assert not np.array_equal(other.test.images, data.test.images)
    assert data.label_space == other.label_space


def test_folder_with_train_and_test_subfolders_and_limits(tmp_path):
    _folder(tmp_path / "set" / "train", per_class=4)
    _folder(tmp_path / "set" / "test", per_class=2, labels=("cat", "eel"))
    data = load_image_task_data({"train_path": str(tmp_path / "set"), "task": "mine", "image_size": 8}, "site-1")
    assert data.task == "mine" and data.label_names == ["cat", "dog", "eel"]
    assert len(data.train) == 12 and len(data.test) == 4
    assert sorted(set(data.test.labels.tolist())) == [0, 2]
    limited = load_image_task_data(
        {"train_path": str(tmp_path / "set"), "image_size": 8, "max_train": 5, "max_test": 3}, "site-1"
    )
    assert len(limited.train) == 5 and len(limited.test) == 3


def test_test_labels_must_occur_in_training(tmp_path):
    _folder(tmp_path / "set" / "train", labels=("cat", "dog"))
    _folder(tmp_path / "set" / "test", labels=("cat", "yak"))
    with pytest.raises(ValueError, match=r"test labels \['yak'\]"):
        load_image_task_data({"train_path": str(tmp_path / "set")}, "site-1")


def test_npz_with_and_without_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 10, 10)).astype(np.float32)  # grey floats in [0, 1]
    y = np.repeat([3, 10, 7], 10)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    data = load_image_task_data({"train_path": str(tmp_path / "a.npz"), "image_size": 10, "test_fraction": 0.2}, "s")
    assert data.label_names == ["3", "7", "10"], "integer labels sort numerically"
    assert len(data.train) == 24 and len(data.test) == 6
    # same size: pixels are the floats x 255, in three equal channels
    for i, label in enumerate(data.train.labels[:3]):
        matches = [
            j for j in range(30) if np.array_equal(np.round(x[j] * 255).astype(np.uint8), data.train.images[i, :, :, 0])
        ]
        assert len(matches) == 1 and data.label_names[label] == str(y[matches[0]])
        assert np.array_equal(data.train.images[i, :, :, 0], data.train.images[i, :, :, 2])

    x_test = rng.integers(0, 256, (4, 3, 12, 12), dtype=np.uint8)  # channels first
    np.savez(tmp_path / "b.npz", x=rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8), y=["a", "b"] * 3,
             x_test=x_test, y_test=["b", "b", "a", "a"])  # fmt: skip
    data = load_image_task_data({"train_path": str(tmp_path / "b.npz"), "image_size": 12}, "s")
    assert len(data.train) == 6 and data.test.labels.tolist() == [1, 1, 0, 0]
    assert np.array_equal(data.test.images, x_test.transpose(0, 2, 3, 1))


def test_fit_image_resizes_the_shorter_side_and_centre_crops():
    array = np.zeros((20, 40), dtype=np.uint8)
    array[:, 10:30] = 200  # a centred bright band, half the width
    out = fit_image(array, 10)
    assert out.shape == (10, 10, 3)
    assert (out[:, 2:8] >= 190).all(), "the crop keeps the centre"
    assert fit_images(np.zeros((3, 5, 7, 1), np.uint8), 8).shape == (3, 8, 8, 3)


def test_normalize_matches_the_formula():
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    x = normalize(images)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    expected = (images[1, 2, 3, 1] / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert float(x[1, 1, 2, 3]) == pytest.approx(expected, abs=1e-6)
    x = normalize(images, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize(
    "config, error, match",
    [
        ({}, ValueError, "exactly one of 'suite'"),
        ({"suite": "vision-domains", "train_path": "x"}, ValueError, "exactly one of 'suite'"),
        (
            {"suite": "vision-domains", "max_train": 3},
            ValueError,
            r"unknown data config keys \['max_train'\]",
        ),
        ({"train_path": "/no/such/folder"}, FileNotFoundError, "image data not found"),
        ({"suite": "no-such-suite"}, ValueError, "unknown vision suite"),
        ({"suite": "vision-domains", "image_size": 4}, ValueError, "image_size must be an int"),
        ({"suite": "vision-domains", "n_train": 0}, ValueError, "n_train must be"),
    ],
)
def test_config_errors(config, error, match):
    with pytest.raises(error, match=match):
        load_image_task_data(config, "site-1")


def test_file_errors(tmp_path):
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['y'\]"):
        load_image_task_data({"train_path": str(tmp_path / "noy.npz")}, "s")
    np.savez(tmp_path / "range.npz", x=np.full((4, 4, 4), 2.0, np.float32), y=[0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"float images must hold values in \[0, 1\]"):
        load_image_task_data({"train_path": str(tmp_path / "range.npz")}, "s")
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 4, 4, 5), np.uint8), y=[0, 1, 0, 1])
    with pytest.raises(ValueError, match="images must be"):
        load_image_task_data({"train_path": str(tmp_path / "shape.npz")}, "s")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        load_image_task_data({"train_path": str(tmp_path / "empty")}, "s")
    _folder(tmp_path / "broken")
    (tmp_path / "broken" / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image_task_data({"train_path": str(tmp_path / "broken"), "test_fraction": 0.5}, "s")
    _folder(tmp_path / "half" / "train")
    with pytest.raises(ValueError, match="only one of train/ and test/"):
        load_image_task_data({"train_path": str(tmp_path / "half")}, "s")
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(ValueError, match="unsupported image data"):
        load_image_task_data({"train_path": str(tmp_path / "data.csv")}, "s")


# -- the vision-domains suite (real data from the asset cache) ----------------------------------------------
def test_suite_composition():
    sites = [load_image_task_data(SUITE, f"site-{k}") for k in range(1, 7)]
    assert [s.task for s in sites] == [c.task for c in VISION_CLIENTS]
    assert sites[0].label_names == ["T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"]
    assert sites[1].label_names == ["Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot"]
    assert len(sites[2].label_names) == 10 and sites[3].label_names == ["0", "1", "2", "3", "4"]
    assert sites[4].label_names == ["5", "6", "7", "8", "9"] and len(sites[5].label_names) == 10
    for s in sites:
        assert s.train.images.shape == (40, 16, 16, 3) and s.test.images.shape == (30, 16, 16, 3)
        counts = np.bincount(s.train.labels, minlength=s.num_labels)
        assert counts.max() - counts.min() <= 1, f"{s.task}: class-balanced"
        assert s.train.images.std() > 20, f"{s.task}: real images, not blanks"
        assert np.array_equal(s.train.images[..., 0], s.train.images[..., 1]), "grey made RGB"
    assert len({s.label_space for s in sites}) == 6


def test_clients_of_one_source_never_share_an_image():
    from fedbip_nvflare.assets import require_vision_data_dir

    data_dir = require_vision_data_dir()
    for source in ("fashion-mnist", "mnist", "digits"):
        draws = _draw("vision-domains", source, 0, 40, 30, 0, data_dir)
        trains = [set(t.tolist()) for t, _ in draws.values()]
        tests = [set(t.tolist()) for _, t in draws.values()]
        for i in range(len(trains)):
            assert len(trains[i]) == 40 and len(tests[i]) == 30
            for j in range(i + 1, len(trains)):
                assert not trains[i] & trains[j] and not tests[i] & tests[j], source
        if source != "fashion-mnist":  # one pool: training and test images come from the same images
            assert not set().union(*trains) & set().union(*tests), source


def test_suite_is_deterministic_and_cycles_with_fresh_draws():
    a = load_vision_suite_site("vision-domains", "site-4", 20, 10, seed=0, image_size=16)
    b = load_vision_suite_site("vision-domains", "site-4", 20, 10, seed=0, image_size=16)
    c = load_vision_suite_site("vision-domains", "site-4", 20, 10, seed=1, image_size=16)
    assert np.array_equal(a.train.images, b.train.images) and not np.array_equal(a.train.images, c.train.images)
    again = load_vision_suite_site("vision-domains", "site-10", 20, 10, seed=0, image_size=16)
    assert again.task == "mnist-0-4" and not np.array_equal(again.train.images, a.train.images)
    with pytest.raises(ValueError, match="unknown site"):
        load_vision_suite_site("vision-domains", "client-1")


def test_digits_are_upscaled_from_8x8():
    digits = load_vision_suite_site("vision-domains", "site-6", 20, 10, image_size=8)
    assert digits.train.images.max() == 255, "0..16 counts scaled to 0..255"
    assert len(np.unique(digits.train.images)) <= 17


def test_ground_truth_groups_are_the_domains():
    groups = vision_suite_groups("vision-domains", 7)
    assert [groups[f"site-{k}"] for k in range(1, 8)] == ["clothing"] * 3 + ["handwritten-digits"] * 3 + ["clothing"]
    with pytest.raises(ValueError, match="num_clients"):
        vision_suite_groups("vision-domains", 0)


def test_missing_assets_name_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDBIP_ASSETS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_image_task_data(SUITE, "site-1")
