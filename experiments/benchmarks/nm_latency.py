"""What 2:4 sparsity buys on an NVIDIA GPU: dense vs semi-structured latency of MLP blocks.

Two blocks in fp16, each pruned 2:4 by `sweep.pruning.NMSparsity` (magnitude) and converted by
`sweep.pruning.semi_structured` (``torch.sparse.to_sparse_semi_structured``), timed side by side
with ``torch.utils.benchmark`` at batch 1 / 64 / 256 images:

- ``vit_b_mlp``: ViT-B/16's MLP, Linear(768, 3072) - GELU - Linear(3072, 768), 197 tokens per image;
- ``resnet50_1x1``: a ResNet-50 layer3 bottleneck's 1x1 convolutions as Linear layers over its
  14 x 14 pixels, Linear(1024, 256) - ReLU - Linear(256, 1024).

Needs a CUDA GPU of compute capability >= 8.0; elsewhere it says so and exits 0.

    python experiments/benchmarks/nm_latency.py [--batches 1 64 256]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils import benchmark

from sweep.pruning import (
    NMSparsity,
    PruningMethod,
    Scope,
    make_permanent,
    prune_model,
    semi_structured,
    semi_structured_unavailable,
)

BLOCKS = {  # name -> (block, tokens per image)
    "vit_b_mlp": (
        lambda: nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768)),
        197,
    ),
    "resnet50_1x1": (
        lambda: nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 1024)),
        196,
    ),
}


def _ms(model: nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        timer = benchmark.Timer("model(x)", globals={"model": model, "x": x})
        return timer.blocked_autorange(min_run_time=1.0).median * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reason = semi_structured_unavailable(device, 2, 4)
    if reason is not None:
        print(f"nothing to measure: {reason}")
        return 0
    major, minor = torch.cuda.get_device_capability(device)
    print(
        f"{torch.cuda.get_device_name(device)} (compute {major}.{minor}), torch {torch.__version__}"
    )
    header = ("block", "batch", "tokens", "dense ms", "2:4 ms", "speedup", "max |diff|")
    widths = (-14, 6, 8, 10, 9, 9, 12)
    cells = zip(header, widths, strict=True)
    print("".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in cells))
    method = PruningMethod("nm", NMSparsity, {"n": 2, "m": 4})
    for name, (build, tokens) in BLOCKS.items():
        torch.manual_seed(0)
        dense = build().to(device, torch.float16).eval()
        pruned = build().to(device).eval()
        pruned.load_state_dict(dense.state_dict())
        targets = prune_model(pruned, method, 0.5, Scope(layers=("Linear",)))
        make_permanent(pruned)
        sparse, converted = semi_structured(pruned, {t.name for t in targets}, torch.float16)
        masked = pruned.to(torch.float16)
        for batch in args.batches:
            x = torch.randn(
                batch * tokens, dense[0].in_features, device=device, dtype=torch.float16
            )
            dense_ms, sparse_ms = _ms(dense, x), _ms(sparse, x)
            with torch.inference_mode():
                diff = float((sparse(x) - masked(x)).abs().max())
            print(
                f"{name:<14}{batch:>6}{batch * tokens:>8}{dense_ms:>10.3f}{sparse_ms:>9.3f}"
                f"{dense_ms / sparse_ms:>9.2f}{diff:>12.2e}"
                + ("" if len(converted) == 2 else f"  (converted: {converted})")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
