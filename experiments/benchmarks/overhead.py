"""Framework overhead: prune + finetune + evaluate through prune-sweep vs a hand-written loop.

Both sides start from the same dense weights, prune the same tensors with the same
torch.nn.utils.prune method, finetune with the same optimizer, batches and epochs, and evaluate
on the same test split. Runs alternate (A B A B ...) so drift hits both; medians are compared.

    python experiments/benchmarks/overhead.py [--epochs 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from hydra import compose, initialize_config_module
from torch import nn
from torch.nn.utils import prune

from sweep.data import digits
from sweep.models import small_cnn
from sweep.pruning import PruningMethod, Scope, make_permanent, prune_model
from sweep.training import evaluate, train
from sweep.trial import run_trial


def framework(dense: nn.Module, data, settings, seed: int) -> float:
    model = copy.deepcopy(dense)
    torch.manual_seed(seed)
    method = PruningMethod("l1_unstructured", prune.L1Unstructured)
    prune_model(model, method, 0.5, Scope())
    evaluate(model, data.test)
    train(model, data.train, settings, seed=seed, val_split=data.val, progress=False)
    make_permanent(model)
    return evaluate(model, data.test)[0]


def by_hand(dense: nn.Module, data, settings, seed: int) -> float:
    model = copy.deepcopy(dense)
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            prune.l1_unstructured(m, "weight", 0.5)
    accuracy(model, data.test.x, data.test.y)
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    g = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    for _ in range(settings["epochs"]):
        model.train()
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), settings["batch_size"]):
            idx = order[i : i + settings["batch_size"]]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        accuracy(model, data.val.x, data.val.y)
    for m in model.modules():
        if hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    return accuracy(model, data.test.x, data.test.y)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    data = digits(val_fraction=0.15, test_fraction=0.2, split_seed=0)
    settings = {"epochs": args.epochs, "batch_size": 64, "optimizer": "adam", "lr": 1e-3}
    torch.manual_seed(0)
    dense = small_cnn(num_classes=10, in_channels=1, image_size=8)
    train(dense, data.train, {**settings, "lr": 3e-3}, seed=0, progress=False)

    times: dict[str, list[float]] = {"framework": [], "by hand": []}
    accs: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, fn in (("framework", framework), ("by hand", by_hand)):
            start = time.perf_counter()
            accs[name] = fn(dense, data, settings, seed=0)
            times[name].append(time.perf_counter() - start)
    fw, hand = (statistics.median(times[k]) for k in ("framework", "by hand"))
    print(
        f"prune + finetune ({args.epochs} epochs) + evaluate, small_cnn on digits, "
        f"median of {args.repeats}:"
    )
    print(f"  framework  {fw * 1000:8.1f} ms   accuracy {accs['framework']:.4f}")
    print(f"  by hand    {hand * 1000:8.1f} ms   accuracy {accs['by hand']:.4f}")
    print(f"  ratio framework / by hand: {fw / hand:.3f}   (target <= 1.10)")

    # The whole trial adds what a hand loop does not do: dense and pruned FLOPs and latency,
    # the per-layer table and the store write. Shown for context, with the baseline cached.
    with initialize_config_module("sweep.conf", version_base="1.3"):
        import tempfile

        with tempfile.TemporaryDirectory() as store:
            cfg = compose(
                "config",
                [f"store.path={store}", "progress=false", f"finetune.epochs={args.epochs}"],
            )
            run_trial(cfg)  # trains and caches the baseline
            start = time.perf_counter()
            row = run_trial(cfg)
            whole = time.perf_counter() - start
    print(
        f"  whole run_trial with cached baseline: {whole * 1000:.1f} ms "
        f"(finetune {row['time_finetune_s'] * 1000:.1f} ms of it)"
    )


if __name__ == "__main__":
    main()
