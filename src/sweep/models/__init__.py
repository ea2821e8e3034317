"""Model builders named by ``_target_`` in ``conf/model``.

Every builder takes ``num_classes``, ``in_channels`` and ``image_size`` from the dataset, plus
its own config keys, and returns an ``nn.Module`` whose last Linear or Conv layer registered is
the classifier. `torchvision` builds any of torchvision's classification models by name.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
import typing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from sweep.errors import ConfigError

__all__ = ["lenet", "mlp", "small_cnn", "torchvision"]


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


def torchvision(
    num_classes: int,
    in_channels: int,
    image_size: int,
    arch: str,
    small_input: bool | str = "auto",
    classifier_width: int | None = None,
    **options: Any,
) -> nn.Module:
    """Any torchvision classification model, by name, untrained and adapted to the dataset.

    The model is ``torchvision.models.get_model(arch, weights=None, num_classes=num_classes)``
    with these changes:

    - ``in_channels != 3``: its first convolution is replaced by one with the same settings and
      ``in_channels`` inputs;
    - models whose constructor takes the image size (ViT, MaxViT) get ``image_size``;
    - small inputs (``small_input``; ``auto`` is ``image_size <= 32``): a ResNet's stem becomes
      the CIFAR one (3x3 stride-1 conv, no max-pool), and a VGG's max-pools that would shrink the
      feature map below 1x1 become identities;
    - ``classifier_width``: a classifier with hidden layers (VGG, AlexNet, MobileNetV3, MaxViT)
      gets hidden layers of this width after a global average pool, instead of ImageNet's 4096;
    - GoogLeNet and Inception v3 have no auxiliary classifiers (one output to train on).

    A forward pass of one image checks the result, so an image size the architecture cannot
    take fails here, naming one it can (found on the ``meta`` device: shapes, no arithmetic).

    Args:
        num_classes: Outputs of the classifier, from the dataset.
        in_channels: Input channels, from the dataset.
        image_size: Height and width of the inputs, from the dataset.
        arch: A name in ``torchvision.models.list_models(module=torchvision.models)``.
        small_input: ``auto``, ``True`` or ``False``; ``True`` only for the archs with a
            small-input form (ResNet, ResNeXt, Wide ResNet, VGG).
        classifier_width: Width of the classifier's hidden layers; ``None`` keeps torchvision's.
        **options: Other arguments of the arch's torchvision class, such as ``dropout``,
            ``stochastic_depth_prob`` or ``zero_init_residual``.

    Returns:
        The model in training mode, initialised as torchvision initialises it (the layers
        replaced here as PyTorch initialises a new layer).

    Raises:
        ConfigError: An unknown or non-classification ``arch``, an option the arch does not
            take, or an image size it cannot take; one line naming the value and what works.

    Example:
        >>> model = torchvision(10, in_channels=1, image_size=28, arch="mobilenet_v3_small")
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    recipe = _Recipe.check(arch, num_classes, in_channels, small_input, classifier_width, options)
    try:
        model = recipe.build(image_size)
    except ConfigError:
        raise
    except Exception as e:
        raise recipe.failure(image_size, e) from None
    failure = recipe.probe(model, image_size)
    if failure is not None:
        raise recipe.failure(image_size, failure)
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


# ImageNet's input size: every torchvision classification model works at it.
_WORKING_SIZE = 224
_REGISTRY = "torchvision.models.list_models(module=torchvision.models)"
# What the other parts of torchvision.models.list_models() are, by subpackage.
_KINDS = {
    "detection": "detection",
    "segmentation": "segmentation",
    "optical_flow": "optical-flow",
    "video": "video",
    "quantization": "quantized",
}
# Arguments of a torchvision class that the builder sets itself, from the dataset or by design.
_SET_HERE = ("num_classes", "image_size", "input_size", "aux_logits")


@dataclass(frozen=True)
class _Recipe:
    """The checked settings of `torchvision`: how to build ``arch`` for any image size."""

    arch: str
    builder: Callable[..., nn.Module]
    cls: type[nn.Module]
    num_classes: int
    in_channels: int
    small_input: bool | str
    classifier_width: int | None
    kwargs: dict[str, Any]

    @classmethod
    def check(
        cls,
        arch: str,
        num_classes: int,
        in_channels: int,
        small_input: bool | str,
        classifier_width: int | None,
        options: dict[str, Any],
    ) -> _Recipe:
        builder = _classification_builder(arch)
        model_cls = typing.get_type_hints(builder).get("return", nn.Module)
        if small_input != "auto" and not isinstance(small_input, bool):
            raise ConfigError(
                f"model.small_input={small_input!r} is not valid; accepted: auto | true | false"
            )
        if small_input is True and not _has_small_form(model_cls):
            raise ConfigError(
                f"model.small_input=true does not apply to {arch}: only ResNet and VGG models "
                "have a small-input form; accepted: auto | false"
            )
        if classifier_width is not None:
            _check_sizes(classifier_width=classifier_width)
        params = inspect.signature(model_cls).parameters
        accepted = [
            p for p, v in params.items() if p not in _SET_HERE and v.kind is not v.VAR_KEYWORD
        ]
        for key, value in options.items():
            if key == "weights":
                raise ConfigError(
                    f"model.weights={value!r}: torchvision weights are not downloaded; start "
                    "from your own with model.checkpoint"
                )
            if key not in accepted:
                raise ConfigError(
                    f"model.{key}={value!r} is not an option of {arch} (torchvision's "
                    f"{model_cls.__name__}); accepted: {', '.join(accepted)}"
                )
        # one output to train on; torchvision's initialisation without its FutureWarning
        fixed = {k: v for k, v in (("aux_logits", False), ("init_weights", True)) if k in params}
        return cls(
            arch,
            builder,
            model_cls,
            num_classes,
            in_channels,
            small_input,
            classifier_width,
            {**fixed, **options},
        )

    def build(self, size: int) -> nn.Module:
        """The adapted model for ``size`` px inputs, on the current default device."""
        params = inspect.signature(self.cls).parameters
        kwargs = dict(self.kwargs)
        if "image_size" in params:
            kwargs["image_size"] = size
        elif "input_size" in params:
            kwargs["input_size"] = (size, size)
        model = self.builder(weights=None, num_classes=self.num_classes, **kwargs)
        small = size <= 32 if self.small_input == "auto" else self.small_input
        _adapt(model, self.in_channels, size, small)
        if self.classifier_width is not None:
            _narrow_classifier(model, self.arch, self.classifier_width)
        return model

    def probe(self, model: nn.Module, size: int) -> Exception | None:
        """Why a forward pass of one ``size`` px image fails, or ``None``.

        In evaluation mode and without gradients, so ``model`` and the random state are left
        as they were; on the ``meta`` device (shapes only) when ``model`` is there.
        """
        weight = next(itertools.chain(model.parameters(), [torch.empty(0)]))
        x = torch.zeros(1, self.in_channels, size, size, device=weight.device)
        training = model.training
        try:
            with torch.no_grad():
                out = model.eval()(x)
        except Exception as e:
            return e
        finally:
            model.train(training)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if shape != (1, self.num_classes):
            return RuntimeError(f"its output is {shape}, not (1, {self.num_classes}) logits")
        return None

    def failure(self, size: int, error: Exception) -> ConfigError:
        """The error to show for ``error``, raised building or probing for ``size`` px."""
        arch = f"model.arch={self.arch!r}"
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        reference = self._try_build(_WORKING_SIZE)
        if reference is None or self.probe(reference, _WORKING_SIZE) is not None:
            return ConfigError(f"{arch} cannot be built with these settings ({reason})")
        patch = getattr(reference, "patch_size", None)
        if isinstance(patch, int) and size % patch:
            return ConfigError(
                f"{arch} cuts images into {patch}x{patch} patches and the dataset's are "
                f"{size}x{size}; accepted: image sizes that are multiples of {patch}"
            )
        smallest = self.smallest_size()
        # the meta device's shape checks let pass what the kernels refused (torch 2.4's
        # pooling): ask the kernels themselves
        real = smallest <= size
        if real:
            smallest = self.smallest_size(real=True)
        if size < smallest:
            hint = ""
            auto = replace(self, small_input="auto")
            if self.small_input is False and auto.works(size, real=real):
                hint = " (model.small_input=auto adapts it to smaller ones)"
            return ConfigError(
                f"{arch} needs images of at least {smallest}x{smallest} px{hint}; the dataset's "
                f"are {size}x{size}"
            )
        return ConfigError(
            f"{arch} fails on {size}x{size} images ({reason}); "
            f"it works on {_WORKING_SIZE}x{_WORKING_SIZE}"
        )

    def smallest_size(self, *, real: bool = False) -> int:
        """The smallest image size, up to 224, that this recipe works at (bisection); on the
        ``meta`` device (shapes only) unless ``real``."""
        low, high = 1, _WORKING_SIZE
        while low < high:
            mid = (low + high) // 2
            if self.works(mid, real=real):
                high = mid
            else:
                low = mid + 1
        return low

    def works(self, size: int, *, real: bool = False) -> bool:
        model = self._try_build(size, real=real)
        return model is not None and self.probe(model, size) is None

    def _try_build(self, size: int, *, real: bool = False) -> nn.Module | None:
        try:
            if not real:
                with torch.device("meta"):  # no memory, no initialisation
                    return self.build(size)
        except NotImplementedError:
            pass  # a constructor that computes with tensors (RegNet's widths): build for real
        except Exception:
            return None
        try:
            return self.build(size)
        except Exception:
            return None


def _classification_builder(arch: str) -> Callable[..., nn.Module]:
    """torchvision's builder for the classification model ``arch``."""
    from torchvision import models

    names = models.list_models(module=models)
    if arch in names:
        return models.get_model_builder(arch)
    if arch in models.list_models():
        subpackage = models.get_model_builder(arch).__module__.split(".")[2]
        kind = _KINDS.get(subpackage, subpackage)
        raise ConfigError(
            f"model.arch={arch!r} is a torchvision {kind} model, not a classification model; "
            f"accepted: {_REGISTRY}"
        )
    closest = difflib.get_close_matches(str(arch).lower(), names, n=3, cutoff=0)
    raise ConfigError(
        f"model.arch={arch!r} is not a torchvision classification model; "
        f"closest: {', '.join(closest)}; all: {_REGISTRY}"
    )


def _has_small_form(cls: type) -> bool:
    from torchvision.models import VGG, ResNet

    return issubclass(cls, ResNet | VGG)


def _adapt(model: nn.Module, in_channels: int, size: int, small: bool) -> None:
    """Take ``in_channels`` inputs; with ``small``, the small-input form of ResNet and VGG."""
    from torchvision.models import VGG, ResNet

    if small and isinstance(model, ResNet):
        model.conv1 = nn.Conv2d(
            in_channels, model.conv1.out_channels, 3, stride=1, padding=1, bias=False
        )
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        _replace_first_conv(model, in_channels)
    if small and isinstance(model, VGG):
        for i, layer in enumerate(model.features):
            if isinstance(layer, nn.MaxPool2d):
                if size >= 2:
                    size //= 2
                else:
                    model.features[i] = nn.Identity()


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    # The first Conv2d registered is the one the input goes through, in every torchvision
    # classification model (tests/test_models.py runs them all with one input channel).
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    parent, _, attr = name.rpartition(".")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    setattr(model.get_submodule(parent), attr, new)


def _narrow_classifier(model: nn.Module, arch: str, width: int) -> None:
    """Give the classifier's hidden Linear layers ``width`` outputs, after a global pool."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)][
        -1
    ]
    head_name, _, attr = name.rpartition(".")
    head = model.get_submodule(head_name)
    hidden = (
        [i for i, m in enumerate(head) if isinstance(m, nn.Linear) and m is not last]
        if isinstance(head, nn.Sequential) and isinstance(last, nn.Linear)
        else []
    )
    if not hidden:
        raise ConfigError(
            f"model.classifier_width={width} does not apply to {arch}: its classifier "
            f"({name}) has no hidden layer; accepted: null"
        )
    fan_in = head[hidden[0]].in_features
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        cells = math.prod(_pair(pool.output_size))
        if cells > 1:  # VGG's 7x7, AlexNet's 6x6: the hidden layer takes channels instead
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            fan_in //= cells
    for i in hidden:
        head[i] = nn.Linear(fan_in, width, bias=head[i].bias is not None)
        fan_in = width
    setattr(head, attr, nn.Linear(fan_in, last.out_features, bias=last.bias is not None))


def _pair(size: int | tuple[int | None, ...]) -> tuple[int, ...]:
    return (size, size) if isinstance(size, int) else tuple(s or 1 for s in size)
