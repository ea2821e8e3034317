"""`sweep.models.torchvision`: any torchvision classification model, adapted to the dataset."""

from __future__ import annotations

import fnmatch

import pytest
import torch
import torchvision.models as tv
from omegaconf import OmegaConf
from torch import nn

from sweep._build import build_model
from sweep.errors import ConfigError
from sweep.models import torchvision
from tests.conftest import make_cfg

REGISTRY = "torchvision.models.list_models(module=torchvision.models)"
# The smallest image each arch takes (ViT: its patch size, and multiples of it); 1 for the rest.
SMALLEST = {
    "alexnet": 63,
    "convnext_*": 32,
    "densenet*": 29,
    "googlenet": 15,
    "inception_v3": 75,
    "maxvit_t": 221,
    "squeezenet1_0": 21,
    "squeezenet1_1": 17,
    "swin*": 4,
    "vit_*_14": 14,
    "vit_*_16": 16,
    "vit_*_32": 32,
}
# One of each family, at a small size it takes and at 64 px.
REPRESENTATIVE = [
    ("resnet18", 8),
    ("resnet50", 8),
    ("mobilenet_v2", 8),
    ("mobilenet_v3_small", 8),
    ("efficientnet_b0", 8),
    ("convnext_tiny", 32),
    ("vit_b_16", 32),
    ("swin_t", 8),
    ("regnet_x_400mf", 8),
    ("shufflenet_v2_x0_5", 8),
    ("squeezenet1_1", 32),
    ("densenet121", 32),
    ("vgg11_bn", 8),
]


def smallest(arch: str) -> int:
    return next((v for k, v in SMALLEST.items() if fnmatch.fnmatch(arch, k)), 1)


def check_valid_arch(arch: str) -> None:
    """Run the arch check alone: an invalid ``small_input`` is reported only after it."""
    with pytest.raises(ConfigError) as e:
        torchvision(7, 3, 32, arch=arch, small_input="maybe")
    assert str(e.value) == "model.small_input='maybe' is not valid; accepted: auto | true | false"


def classifier(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]


def test_archs_are_torchvisions_classification_models():
    names = tv.list_models(module=tv)
    for arch in names:
        check_valid_arch(arch)
    others = sorted(set(tv.list_models()) - set(names))
    for arch in others:
        with pytest.raises(ConfigError, match="not a classification model"):
            torchvision(7, 3, 32, arch=arch)
    assert len(names) == 80 and len(others) == 41  # torchvision 0.29


def test_unknown_arch_names_the_closest():
    with pytest.raises(ConfigError) as e:
        torchvision(7, 3, 32, arch="resnet19")
    assert str(e.value) == (
        "model.arch='resnet19' is not a torchvision classification model; closest: resnet18, "
        f"resnet152, resnet101; all: {REGISTRY}"
    )


@pytest.mark.parametrize(
    ("arch", "kind"),
    [
        ("fasterrcnn_resnet50_fpn", "detection"),
        ("deeplabv3_resnet50", "segmentation"),
        ("raft_small", "optical-flow"),
        ("r3d_18", "video"),
        ("quantized_resnet18", "quantized"),
    ],
)
def test_other_torchvision_models_say_what_they_are(arch, kind):
    with pytest.raises(ConfigError) as e:
        torchvision(7, 3, 32, arch=arch)
    assert str(e.value) == (
        f"model.arch={arch!r} is a torchvision {kind} model, not a classification model; "
        f"accepted: {REGISTRY}"
    )


@pytest.mark.parametrize(("arch", "small"), REPRESENTATIVE, ids=[a for a, _ in REPRESENTATIVE])
@pytest.mark.parametrize(
    ("channels", "large"),
    # 1 channel at the small size, 3 at 64 px: both adaptations; the other two run with -m slow
    [
        (1, False),
        pytest.param(3, False, marks=pytest.mark.slow),
        pytest.param(1, True, marks=pytest.mark.slow),
        (3, True),
    ],
)
def test_representative_archs_fit_the_dataset(arch, small, channels, large):
    size = 64 if large else small
    torch.manual_seed(0)
    model = torchvision(num_classes=7, in_channels=channels, image_size=size, arch=arch)
    assert model.training and all(p.device.type == "cpu" for p in model.parameters())
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == channels and first.weight.grad is not None
    assert classifier(model).weight.shape[0] == 7  # the layer structured pruning leaves alone


def test_small_input_stems():
    resnet = torchvision(7, 1, 32, arch="resnet50")
    assert (resnet.conv1.kernel_size, resnet.conv1.stride, resnet.conv1.in_channels) == (
        (3, 3),
        (1, 1),
        1,
    )
    assert isinstance(resnet.maxpool, nn.Identity)
    imagenet = torchvision(7, 1, 32, arch="resnet50", small_input=False)
    assert (imagenet.conv1.kernel_size, imagenet.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert torchvision(7, 3, 33, arch="resnet18").conv1.kernel_size == (7, 7)  # auto: <= 32 px
    vgg = torchvision(7, 3, 8, arch="vgg11", classifier_width=64)
    assert [type(m).__name__ for m in vgg.features if not isinstance(m, nn.Conv2d | nn.ReLU)] == [
        "MaxPool2d",
        "MaxPool2d",
        "MaxPool2d",
        "Identity",
        "Identity",
    ]


def test_image_size_goes_to_models_that_take_it():
    assert torchvision(7, 1, 32, arch="vit_b_32").image_size == 32
    assert torchvision(7, 3, 224, arch="maxvit_t").stem[0][0].in_channels == 3


@pytest.mark.parametrize(
    ("arch", "size", "message"),
    [
        (
            "vit_b_16",
            28,
            "model.arch='vit_b_16' cuts images into 16x16 patches and the dataset's are 28x28; "
            "accepted: image sizes that are multiples of 16",
        ),
        (
            "inception_v3",
            32,
            "model.arch='inception_v3' needs images of at least 75x75 px; the dataset's are 32x32",
        ),
        (
            "convnext_tiny",
            28,
            "model.arch='convnext_tiny' needs images of at least 32x32 px; the dataset's are 28x28",
        ),
    ],
)
def test_an_image_size_the_arch_cannot_take(arch, size, message):
    with pytest.raises(ConfigError) as e:
        torchvision(7, 1, size, arch=arch)
    assert str(e.value) == message


def test_small_input_false_says_auto_would_work():
    with pytest.raises(ConfigError) as e:
        torchvision(7, 1, 8, arch="vgg11", small_input=False, classifier_width=64)
    assert str(e.value) == (
        "model.arch='vgg11' needs images of at least 32x32 px (model.small_input=auto adapts it "
        "to smaller ones); the dataset's are 8x8"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"arch": "mobilenet_v2", "small_input": True},
            "model.small_input=true does not apply to mobilenet_v2: only ResNet and VGG models "
            "have a small-input form; accepted: auto | false",
        ),
        (
            {"arch": "resnet18", "classifier_width": 512},
            "model.classifier_width=512 does not apply to resnet18: its classifier (fc) has no "
            "hidden layer; accepted: null",
        ),
        (
            {"arch": "squeezenet1_1", "classifier_width": 64},
            "model.classifier_width=64 does not apply to squeezenet1_1: its classifier "
            "(classifier.1) has no hidden layer; accepted: null",
        ),
        (
            {"arch": "vgg11", "classifier_width": 0},
            "model.classifier_width=0 is out of range; accepted: an int >= 1",
        ),
        (
            {"arch": "resnet18", "dropout": 0.2},
            "model.dropout=0.2 is not an option of resnet18 (torchvision's ResNet); accepted: "
            "block, layers, zero_init_residual, groups, width_per_group, "
            "replace_stride_with_dilation, norm_layer",
        ),
        (
            {"arch": "resnet18", "weights": "DEFAULT"},
            "model.weights='DEFAULT': torchvision weights are not downloaded; start from your "
            "own with model.checkpoint",
        ),
    ],
)
def test_settings_that_do_not_apply(settings, message):
    with pytest.raises(ConfigError) as e:
        torchvision(7, 3, 32, **settings)
    assert str(e.value) == message


def test_options_of_the_torchvision_class_pass_through():
    model = torchvision(7, 3, 32, arch="mobilenet_v2", dropout=0.3, width_mult=0.5)
    assert model.classifier[0].p == 0.3 and model.features[0][0].out_channels == 16


@pytest.mark.parametrize(
    ("arch", "size", "widths"),
    [
        ("vgg11", 32, [(512, 64), (64, 64), (64, 7)]),
        ("alexnet", 64, [(256, 64), (64, 64), (64, 7)]),
        ("mobilenet_v3_small", 32, [(576, 64), (64, 7)]),
    ],
)
def test_classifier_width_narrows_hidden_layers(arch, size, widths):
    model = torchvision(7, 3, size, arch=arch, classifier_width=64)
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == widths
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_torchvision_option_composes(tmp_path):
    cfg = make_cfg(
        tmp_path, "model=torchvision", "model.arch=mobilenet_v3_small", "+model.dropout=0.1"
    )
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    assert spec["name"] == "mobilenet_v3_small" and spec["checkpoint"] is None
    model = build_model(spec, {"num_classes": 7, "in_channels": 1, "image_size": 8})
    assert model.classifier[2].p == 0.1
    # the same model under two names is one config, so one trial key and one cached baseline
    resnet18, default = (
        OmegaConf.to_container(make_cfg(tmp_path, f"model={m}").model, resolve=True)
        for m in ("resnet18", "torchvision")
    )
    assert resnet18 == default


@pytest.mark.parametrize(
    ("channels", "size"),
    [
        pytest.param(1, 8, marks=pytest.mark.slow),
        (3, 32),
        pytest.param(1, 64, marks=pytest.mark.slow),
    ],
)
def test_presets_build_what_the_removed_builders_built(tmp_path, channels, size):
    facts = {"num_classes": 10, "in_channels": channels, "image_size": size}
    for preset, reference in (("resnet18", _old_resnet18), ("vgg11", _old_vgg11)):
        spec = OmegaConf.to_container(make_cfg(tmp_path, f"model={preset}").model, resolve=True)
        assert spec["name"] == preset
        torch.manual_seed(0)
        model = build_model(spec, facts)
        after = torch.rand(1)  # building checks a forward pass, which draws nothing
        torch.manual_seed(0)
        old = reference(**facts)
        assert repr(model) == repr(old)
        new_state, old_state = model.state_dict(), old.state_dict()
        assert [(k, v.shape) for k, v in new_state.items()] == [
            (k, v.shape) for k, v in old_state.items()
        ]
        if preset == "resnet18":  # same random draws in the same order: the same weights
            assert all(torch.equal(new_state[k], old_state[k]) for k in old_state)
            assert torch.equal(after, torch.rand(1))
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert model.training and all(int(m.num_batches_tracked) == 0 for m in norms)


@pytest.mark.slow
@pytest.mark.parametrize("arch", tv.list_models(module=tv))
def test_every_arch_builds_at_its_smallest_size(arch):
    """Shapes only, on the meta device (RegNet computes its widths with tensors: on the CPU)."""
    size = max(smallest(arch), 8)
    device = "cpu" if arch.startswith("regnet") else "meta"
    for channels in (1, 3):
        with torch.device(device):
            model = torchvision(7, channels, size, arch=arch)
        out = model(torch.zeros(2, channels, size, size, device=device))
        assert out.shape == (2, 7)
        assert classifier(model).weight.shape[0] == 7
    if size == smallest(arch) and not arch.startswith("vit"):
        # the meta device checks only the shapes its kernels check: on torch 2.4, ConvNeXt's
        # pooling passes images too small for it there, and the CPU's kernels refuse them
        with pytest.raises(ConfigError, match=f"needs images of at least {size}x{size} px"):
            for where in (device, "cpu"):
                with torch.device(where):
                    torchvision(7, 1, size - 1, arch=arch)


# The hand-written builders that conf/model/resnet18.yaml and vgg11.yaml named before they
# became presets of `torchvision`, as they were.


def _old_resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    model = tv.resnet18(weights=None, num_classes=num_classes)
    if image_size <= 32:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def _old_vgg11(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    model = tv.vgg11_bn(weights=None)
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
    model.classifier = nn.Sequential(
        nn.Linear(512, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(512, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    )
    return model


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("DictOut", "gives dict"),
        ("RGBOnly", "fails: RuntimeError: "),  # then torch's words, which its versions change
        ("TwelveOut", "gives (2, 12)"),  # ran to the end, its outputs 10 and 11 never right
    ],
)
def test_a_model_of_yours_whose_outputs_are_no_logits_is_refused_before_it_trains(
    tmp_path, target, problem
):
    """It pretrained, then failed with torch's message (or ran with classes the data lacks)."""
    from sweep.trial import prepare

    model = [f"model._target_=tests.custom_models.{target}", f"model.name={target}"]
    cfg = make_cfg(tmp_path, *model, "~model.width")
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    head, _, tail = str(e.value).partition("; accepted: ")
    assert head.startswith(
        f"model._target_='tests.custom_models.{target}' on a batch of (2, 1, 8, 8) test "
        f"inputs {problem}"
    )
    assert tail == "a model that returns (2, 10) logits (10 classes)"
    assert "\n" not in str(e.value)
    assert not (tmp_path / "results").exists()
