"""What compaction buys: latency and parameters of compacted vs dense vs masked models.

resnet18 and vgg11 (CIFAR-sized 32x32 inputs, 10 classes) pruned by ln_structured along output
channels at several amounts. For each: the masked model as torch.nn.utils.prune leaves it
(pruning hooks active), the same with masks folded into the weights (zeros, same shapes), and
the compacted model (channels removed by Torch-Pruning). Each is timed against the dense model
in alternating rounds (`sweep.metrics.paired_latency`): a ratio is the median of the rounds'
ratios, with its 95% interval. The models are built and pruned on the CPU and timed as copies
on the device, so that the next amount prunes the dense model where its example input is.

    python experiments/benchmarks/compaction.py [--device cpu|cuda] [--amounts 0.25 0.5 0.75]
    python experiments/benchmarks/compaction.py --archs resnet50 --image-size 224 --amounts 0.5 \
        --batches 1 32
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch.nn.utils import prune

from sweep.metrics import count_flops, count_params, paired_latency
from sweep.models import torchvision
from sweep.pruning import (
    PruningMethod,
    Scope,
    compact,
    make_permanent,
    prune_channel_groups,
    silence_dead_channels,
)

# the resnet18 and vgg11 presets of conf/model
ARCHS = {"resnet18": {"arch": "resnet18"}, "vgg11": {"arch": "vgg11_bn", "classifier_width": 512}}
METHOD = PruningMethod("ln_structured", prune.LnStructured, {"n": 2, "dim": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--archs", nargs="+", default=list(ARCHS), help="presets, or any torchvision arch"
    )
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(
        f"{'model':9} {'amount':>6} {'batch':>5} {'dense ms':>9} {'masked':>7} {'folded':>7} "
        f"{'compact':>7} {'params':>7} {'flops':>7}"
    )
    size = args.image_size
    for name in args.archs:
        torch.manual_seed(0)
        options = ARCHS.get(name, {"arch": name})
        dense = torchvision(num_classes=10, in_channels=3, image_size=size, **options).eval()
        example = torch.randn(1, 3, size, size)
        for amount in args.amounts:
            masked = copy.deepcopy(dense)
            _, groups, _ = prune_channel_groups(masked, METHOD, amount, Scope(), example)
            silence_dead_channels(groups)
            small = compact(masked, groups, example).eval()
            folded = make_permanent(copy.deepcopy(_detached(masked))).eval()
            params = count_params(small) / count_params(dense)
            flops = count_flops(small, example) / count_flops(dense, example)
            models = {"masked": masked.eval(), "folded": folded, "compact": small}
            for batch in args.batches:
                x = torch.randn(batch, 3, size, size, device=device)
                repeats = 30 if batch == 1 else 8
                on_device = copy.deepcopy(dense).to(device)
                ratio, spread = {}, {}
                for kind, model in models.items():
                    timed = paired_latency(
                        on_device,
                        _copy(model).to(device),
                        x,
                        warmup=3,
                        repeats=repeats,
                        max_repeats=5 * repeats,
                        width=0.1,
                    )
                    low, mid, high = timed.speedup
                    ratio[kind], spread[kind] = 1 / mid, (1 / low - 1 / high) / 2
                    dense_ms = timed.dense_ms[1]
                noisy = max(spread.values()) > 0.05
                print(
                    f"{name:9} {amount:6.2f} {batch:5d} {dense_ms:9.2f} "
                    f"{ratio['masked']:7.2f} {ratio['folded']:7.2f} {ratio['compact']:7.2f} "
                    f"{params:7.2f} {flops:7.2f}"
                    + (f"  (noisy: +-{max(spread.values()):.2f})" if noisy else "")
                )
    print(
        "masked/folded/compact: latency relative to dense; params, flops: compacted / dense. "
        "Targets at 0.5 on CPU: compact <= 0.40, params <= 0.30."
    )


def _copy(model):
    """A copy to time on the device: the model itself stays on the CPU, where the next amount
    prunes it (a masked model's hooks come along)."""
    return copy.deepcopy(_detached(model))


def _detached(model):
    # a masked module's `weight` is orig * mask, which deepcopy refuses; the hook recomputes it
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            module.weight = module.weight.detach()
    return model


if __name__ == "__main__":
    main()
