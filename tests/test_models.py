"""Model registry: every entry builds and runs; ImageNet initialisation is correct."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gastricvision.errors import WeightsError
from gastricvision.models import MODEL_SPECS, cam_target_layer_name, create_model, fuse_batchnorm

# ImageNet-1k class indices 281 to 285 are the domestic cats (tabby ... Egyptian cat).
CAT_CLASSES = range(281, 286)


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_registry_model_output_shape(name):
    spec = MODEL_SPECS[name]
    model = create_model(spec.architecture, len(spec.classes) or None).eval()
    batch = torch.rand(2, 3, spec.input_size, spec.input_size)
    if spec.architecture == "unet":
        batch = torch.cat([batch, torch.zeros(2, 1, spec.input_size, spec.input_size)], dim=1)
    with torch.no_grad():
        output = model(batch)
    if spec.task == "reconstruction":
        assert output.shape == (2, 3, spec.input_size, spec.input_size)
        assert float(output.min()) >= 0.0 and float(output.max()) <= 1.0
    else:
        assert output.shape == (2, len(spec.classes))


@pytest.mark.parametrize("name", [n for n, s in MODEL_SPECS.items() if s.task != "reconstruction"])
def test_cam_layer_declared_for_classifiers(name):
    spec = MODEL_SPECS[name]
    model = create_model(spec.architecture, len(spec.classes))
    layer = model.get_submodule(cam_target_layer_name(spec.architecture))
    assert isinstance(layer, torch.nn.Module)


def test_imagenet_lite0_classifies_chelsea_as_cat():
    from skimage import data

    model = create_model("tf_efficientnet_lite0", 1000, imagenet=True).eval()
    image = Image.fromarray(data.chelsea()).resize((224, 224), Image.Resampling.BICUBIC)
    batch = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255.0
    batch = (batch - 0.5) / 0.5
    with torch.no_grad():
        top = int(model(batch).argmax())
    assert top in CAT_CLASSES


def test_imagenet_lite0_keeps_new_head_random():
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 8, imagenet=True)
    assert model.classifier.weight.shape == (8, 1280)
    reference = create_model("tf_efficientnet_lite0", 1000, imagenet=True)
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)


def test_imagenet_shape_mismatch_fails_loudly():
    import timm

    from gastricvision.models import load_imagenet_efficientnet_lite0

    model = timm.create_model("tf_efficientnet_lite0", num_classes=8, pretrained=False)
    model.conv_stem = torch.nn.Conv2d(3, 32, 5, stride=2, padding=2, bias=False)
    with pytest.raises(WeightsError, match=r"_conv_stem.weight has shape \(32, 3, 3, 3\), but timm's conv_stem.weight expects \(32, 3, 5, 5\)"):
        load_imagenet_efficientnet_lite0(model)

    deeper = timm.create_model("tf_efficientnet_lite1", num_classes=8, pretrained=False)
    with pytest.raises(WeightsError, match=r"has 296 tensors"):
        load_imagenet_efficientnet_lite0(deeper)


def test_imagenet_unavailable_for_resnet():
    with pytest.raises(WeightsError, match=r"No offline ImageNet weights for 'resnet18'"):
        create_model("resnet18", 2, imagenet=True)


def test_unknown_architecture_rejected():
    with pytest.raises(WeightsError, match=r"Unknown architecture 'not_a_net'"):
        create_model("not_a_net", 2)


@pytest.mark.parametrize("architecture", ["conv_autoencoder", "unet"])
def test_fused_batchnorm_keeps_outputs(architecture):
    torch.manual_seed(0)
    model = create_model(architecture)
    # Running statistics away from 0 and 1, so that folding them changes the weights.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    inputs = torch.rand(2, model.in_channels if hasattr(model, "in_channels") else 3, 64, 64)
    with torch.inference_mode():
        expected = model(inputs)
        fuse_batchnorm(model)
        fused = model(inputs)

    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())
    assert torch.allclose(fused, expected, atol=1e-5)


def test_fused_batchnorm_rejects_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fuse_batchnorm(create_model("unet"))
