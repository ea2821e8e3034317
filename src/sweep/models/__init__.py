"""Model builders named by ``_target_`` in ``conf/model``.

Every builder takes ``num_classes``, ``in_channels`` and ``image_size`` from the dataset, plus
its own config keys, and returns an ``nn.Module`` whose last Linear layer is the classifier.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from sweep.errors import ConfigError

__all__ = ["lenet", "mlp", "resnet18", "small_cnn", "vgg11"]


def small_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """Three 3x3 conv blocks with BatchNorm, global average pooling and a linear classifier.

    Example:
        >>> small_cnn(num_classes=10, in_channels=1, image_size=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    _check_sizes(width=width)
    w = width
    return nn.Sequential(
        OrderedDict(
            block1=_conv_bn(in_channels, w),
            block2=_conv_bn(w, 2 * w),
            pool=nn.MaxPool2d(2) if image_size >= 4 else nn.Identity(),
            block3=_conv_bn(2 * w, 4 * w),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            classifier=nn.Linear(4 * w, num_classes),
        )
    )


def mlp(
    num_classes: int, in_channels: int, image_size: int, hidden: Sequence[int] = (256, 128)
) -> nn.Module:
    """Fully connected layers with ReLU over the flattened image."""
    _check_sizes(**{f"hidden[{i}]": h for i, h in enumerate(hidden)})
    sizes = [in_channels * image_size * image_size, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*layers)


def lenet(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """LeNet-5: two 5x5 convs (padded, so 8x8 inputs work) and three fully connected layers."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = features(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
    return nn.Sequential(
        features,
        nn.Linear(flat, 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


def resnet18(
    num_classes: int, in_channels: int, image_size: int, small_input_stem: bool | str = "auto"
) -> nn.Module:
    """torchvision's ResNet-18, with the CIFAR stem (3x3 stride 1, no max-pool) for small inputs."""
    import torchvision  # 1 s to import: only for the models that need it

    if small_input_stem not in ("auto", True, False):
        raise ConfigError(
            f"model.small_input_stem={small_input_stem!r} is not valid; "
            "accepted: auto | true | false"
        )
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    small = image_size <= 32 if small_input_stem == "auto" else bool(small_input_stem)
    if small:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def vgg11(
    num_classes: int,
    in_channels: int,
    image_size: int,
    batch_norm: bool = True,
    classifier_width: int = 512,
) -> nn.Module:
    """torchvision's VGG-11 features with a compact classifier.

    Max-pools that would shrink the feature map below 1x1 become identities, so 8x8 and 28x28
    inputs work; ImageNet's 4096-wide classifier is replaced by a ``classifier_width`` one.
    """
    import torchvision

    _check_sizes(classifier_width=classifier_width)
    build = torchvision.models.vgg11_bn if batch_norm else torchvision.models.vgg11
    model = build(weights=None)
    first = model.features[0]
    model.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
    size = image_size
    for i, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            if size >= 2:
                size //= 2
            else:
                model.features[i] = nn.Identity()
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    w = classifier_width
    model.classifier = nn.Sequential(
        nn.Linear(512, w),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(w, w),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(w, num_classes),
    )
    return model


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{name}={value!r} is out of range; accepted: an int >= 1")


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
        )
    )
