"""MobileNetV2 in plain PyTorch against torchvision's real ImageNet checkpoint (the offline copy)."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from fedbip_nvflare import assets
from fedbip_nvflare.models.mobilenet_v2 import (
    CHECKPOINT_FILE,
    MobileNetV2,
    checkpoint_file,
    load_mobilenet_v2,
    pointwise_conv_names,
)

# ImageNet-1k class indices (the standard synset order) of buildings like the temple in china.jpg:
# 483 castle, 497 church, 538 dome, 663 monastery, 668 mosque, 698 palace, 832 stupa, 858 tile roof.
BUILDING_CLASSES = {483, 497, 538, 663, 668, 698, 832, 858}


@pytest.fixture(scope="module")
def mobilenet_dir() -> str:
    path = assets.model_path("torchvision/mobilenet_v2")
    if path is None:
        pytest.fail("offline MobileNetV2 missing: run `python -m fedbip_nvflare.assets fetch` (make test does it)")
    return path


@pytest.fixture(scope="module")
def model(mobilenet_dir) -> MobileNetV2:
    torch.set_num_threads(1)
    return load_mobilenet_v2(mobilenet_dir).eval()


def _imagenet_input(path: str) -> torch.Tensor:
    """torchvision's ImageNet evaluation transform: shorter side to 256 (bilinear), centre crop 224, normalise."""
    from PIL import Image

    from fedbip_nvflare.models.pixels import normalize

    with Image.open(path) as image:
        w, h = image.size
        image = image.convert("RGB").resize((round(w * 256 / min(w, h)), round(h * 256 / min(w, h))), Image.BILINEAR)
    left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
    return normalize(np.asarray(image.crop((left, top, left + 224, top + 224)))[None])


def test_checkpoint_loads_strictly_with_torchvision_keys(mobilenet_dir, model):
    state = torch.load(os.path.join(mobilenet_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    assert list(model.state_dict()) == list(state), "module tree must match torchvision's key order"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's mobilenet_v2 parameter count
    assert checkpoint_file(mobilenet_dir) == checkpoint_file(os.path.join(mobilenet_dir, CHECKPOINT_FILE))


def test_a_real_photo_is_classified_as_a_building(model):
    photo = os.path.join(assets.require_vision_data_dir(), "sklearn", "images", "china.jpg")
    with torch.no_grad():
        probs = model(_imagenet_input(photo)).softmax(dim=-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in BUILDING_CLASSES, f"top-5 {top5}"
    assert probs[top5[0]] > 0.3, "the pre-trained weights are confident on a clear photo"
    features = model.forward_features(_imagenet_input(photo))
    assert features.shape == (1, 1280)


def test_random_init_does_not_recognise_the_photo():
    torch.manual_seed(0)
    photo = os.path.join(assets.require_vision_data_dir(), "sklearn", "images", "china.jpg")
    with torch.no_grad():
        probs = MobileNetV2().eval()(_imagenet_input(photo)).softmax(dim=-1)[0]
    assert float(probs.max()) < 0.05, "only the loaded weights make the prediction confident"


def test_pointwise_names_are_exactly_the_1x1_convolutions(model):
    modules = dict(model.named_modules())
    one_by_one = [
        n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
    ]
    assert list(pointwise_conv_names()) == one_by_one
    assert len(one_by_one) == 34
    depthwise = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert not set(depthwise) & set(pointwise_conv_names())


def test_any_input_size_gives_pooled_features(model):
    with torch.no_grad():
        for side in (32, 64, 97):
            assert model.forward_features(torch.zeros(2, 3, side, side)).shape == (2, 1280)


def test_missing_or_wrong_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MobileNetV2 checkpoint"):
        load_mobilenet_v2(str(tmp_path))
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_mobilenet_v2(str(bad))
