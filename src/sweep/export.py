"""Every pruned model back out: kept model files, `load_model`, and ``python -m sweep.export``.

A complete trial keeps its final model (pruned and finetuned) in the store as
``models/<row id>.pt`` (``store.models``: ``sparse`` by default, ``dense``, or ``none``). The
file holds only tensors and plain values, so it loads with ``torch.load(weights_only=True)``:

- ``model``: the resolved ``model`` config (``_target_`` and its arguments) and ``inputs``
  (``num_classes``, ``in_channels``, ``image_size``): the model is rebuilt by calling the same
  builder, never unpickled;
- ``structure``: for a compacted model, the module attributes compaction changed (a conv's
  ``out_channels``, ``groups``...); the tensors' own shapes say the rest;
- ``state``: the state dict; ``sparse`` keeps each float tensor with zeros as its non-zero
  values plus a bitmask (`sweep.sparse`), so a model pruned to 90 % takes about 13 % of its
  dense size; a compacted model is already small and dense.

    python -m sweep.export 3ccbb11b270ab904 --out pruned.pt        # plain state dict + rebuild
    python -m sweep.export 3ccbb11b270ab904 --out pruned.onnx --format onnx
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import ConfigError

# torch is imported where a model is built: a trial key that is not in the store, a bad --out,
# are answered from pandas alone, without the seconds torch takes to import.
if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["FORMAT", "export", "kept_file", "load_model", "read_model", "save_model"]

log = logging.getLogger(__name__)

FORMAT = "prune-sweep model 1"
# The file name suffixes each export format is written under.
SUFFIXES = {"pt": (".pt", ".pth"), "onnx": (".onnx",)}
_PLAIN = (int, float, bool, str)


def save_model(
    file: str | os.PathLike,
    model: nn.Module,
    *,
    spec: Mapping[str, Any],
    inputs: Mapping[str, int],
    reference: nn.Module | None = None,
    packed: bool = True,
    trial_key: str | None = None,
) -> Path:
    """Write ``model`` to ``file`` (atomically) in the kept-model format; return the path.

    Args:
        file: Where to write.
        model: The final model, masks made permanent.
        spec: The resolved ``model`` config that builds its architecture.
        inputs: ``num_classes``, ``in_channels``, ``image_size`` the builder was given.
        reference: A model as ``spec`` builds it, when ``model`` was compacted: the module
            attributes that differ from it are recorded as the structure.
        packed: Store zeros as a bitmask (`sweep.sparse`), else dense tensors.
        trial_key: Recorded in the file.
    """
    import torch

    from sweep import sparse
    from sweep._files import atomic_write

    record = _record(model, spec, inputs, reference, trial_key)
    state = model.state_dict()
    record["state"] = (
        sparse.pack(state) if packed else {k: v.detach().cpu() for k, v in state.items()}
    )
    path = Path(file).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(record, f))
    return path


def read_model(file: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model in a kept-model (or exported ``.pt``) file, in eval mode.

    Raises:
        ConfigError: The file is missing or not in this format, its builder fails, or
            ``device`` is not one here (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    """
    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(f"model file {str(path)!r} does not exist")
    import torch

    from sweep import sparse
    from sweep._build import CODE_KEY, build_model, code_digest
    from sweep.devices import resolve_device

    if not isinstance(device, torch.device):
        device = resolve_device(str(device))  # device='cpuu': one line, before any read

    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"model file {str(path)!r} is not readable ({type(e).__name__}); accepted: a file "
            "written by prune-sweep (store models/ or python -m sweep.export)"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(
            f"model file {str(path)!r} is not a prune-sweep model file; accepted: a file "
            f"written by prune-sweep ({FORMAT!r})"
        )
    model = build_model(record["model"], record["inputs"])
    kept, now = record["model"].get(CODE_KEY), code_digest(record["model"])
    if kept is not None and kept != now:
        log.warning(
            "model file %s was kept from other code of %s (code_sha256 %s, now %s): its weights "
            "load into the class as it is now",
            path,
            record["model"].get("_target_"),
            kept,
            now,
        )
    state = record.get("state")
    state = sparse.unpack(state) if state is not None else record["state_dict"]
    _reshape(model, record["structure"], state)
    model.load_state_dict(state)
    return model.to(device).eval()


def load_model(
    trial: str | Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The pruned, finetuned model of a trial, rebuilt from the store, in eval mode.

    Args:
        trial: A trial key (``df.trial_key``), a row of `sweep.load_results` (a Series, a
            one-row DataFrame or a dict), or the path of a model file (``.pt``, ``.pth``).
        path: The store folder; default: for a row, the folder `sweep.load_results` read it
            from, else the store its trial wrote to (``store.path``), else ``results``.
        device: Where to put the model.

    Raises:
        ConfigError: No complete trial with that key kept its model, or the file is missing.

    Example:
        >>> df = sweep.load_results()  # doctest: +SKIP
        >>> model = sweep.load_model(df.sort_values("acc_finetuned").iloc[-1])  # doctest: +SKIP
    """
    return read_model(kept_file(trial, path), device=device)


def kept_file(trial: str | Mapping[str, Any], path: str | os.PathLike | None = None) -> Path:
    """The model file a trial kept: see `load_model` for the arguments.

    Raises:
        ConfigError: No such trial in the store, or it kept no model.
    """
    import pandas as pd

    from sweep.store import DEFAULT_PATH, load_results

    if isinstance(trial, pd.DataFrame):  # df[df.trial_key == key], or df.iloc[[0]]
        if len(trial) != 1:
            raise ConfigError(
                f"a DataFrame of {len(trial)} rows is not one trial; accepted: one row of "
                "sweep.load_results (df.iloc[0], or a one-row frame), a trial key, or the path "
                "of a model file"
            )
        trial = trial.iloc[0]
    if not isinstance(trial, str | os.PathLike | Mapping) and not hasattr(trial, "get"):
        raise ConfigError(
            f"trial={trial!r} is not a trial; accepted: a trial key (str, the trial_key column), "
            "a row of sweep.load_results, or the path of a model file"
        )
    if isinstance(trial, os.PathLike):
        trial = str(trial)
    if isinstance(trial, str) and Path(trial).suffix in SUFFIXES["pt"]:  # export's .pth too
        if not Path(trial).expanduser().is_file():
            raise ConfigError(
                f"model file {trial!r} does not exist; accepted: the path of a model file, a trial "
                "key (str, the trial_key column) or a row of sweep.load_results"
            )
        return Path(trial).expanduser()
    store = Path(path if path is not None else _store_of(trial) or DEFAULT_PATH).expanduser()
    if isinstance(trial, str):
        df = load_results(store)
        rows = df[df["trial_key"] == trial] if "trial_key" in df else df.iloc[:0]
        if rows.empty:
            keys = df["trial_key"].dropna().unique().tolist() if "trial_key" in df else []
            raise ConfigError(_not_in_store(trial, store, keys))
        kept = rows[rows["model_file"].notna()] if "model_file" in rows else rows.iloc[:0]
        # a config run in several studies: the most recent one
        row = kept.iloc[-1] if not kept.empty else rows.iloc[-1]
    else:
        row = trial
        if not isinstance(row.get("trial_key"), str):
            raise ConfigError(
                f"a {type(trial).__name__} without a trial_key is not a row of "
                "sweep.load_results; accepted: a trial key (str, the trial_key column), a row of "
                "sweep.load_results, or the path of a model file"
            )
    file = row.get("model_file")
    if not isinstance(file, str):
        raise ConfigError(
            f"trial {row.get('trial_key')!r} kept no model (status {row.get('status')}); "
            "complete trials keep theirs unless store.models=none"
        )
    if not (store / file).is_file():
        raise ConfigError(
            f"model file {str(store / file)!r} does not exist; accepted: path= the store the "
            f"trial {row.get('trial_key')!r} was run with"
        )
    return store / file


def _store_of(trial: Any) -> str | None:
    """The store a row comes from: the one `sweep.load_results` read it from, else the one
    its trial wrote (``run_trial``'s row, a row of a study's storage: ``store.path``)."""
    if isinstance(trial, str):
        return None
    read_from = getattr(trial, "attrs", {}).get("store")
    if read_from is not None:
        return read_from
    written = trial.get("store_file")  # run_trial's row: <store>/trials/<row id>.parquet
    if isinstance(written, str) and Path(written).is_absolute():
        return str(Path(written).parent.parent)
    configured = trial.get("store.path")
    return configured if isinstance(configured, str) else None


def _not_in_store(trial: str, store: Path, keys: list[str]) -> str:
    """One line for a key the store lacks: the keys it has, or the one the user began to type."""
    line = f"trial {trial!r} is not in the store {str(store)!r}"
    if not keys:
        return f"{line}, which has no trials; pass path= the store the trial was run with"
    begun = [key for key in keys if trial and key.startswith(trial)]
    if len(begun) == 1:
        return f"{line}; did you mean {begun[0]!r}? (a trial key is matched whole)"
    some = ", ".join(repr(key) for key in sorted(begun or keys)[:3])
    more = f" and {len(begun or keys) - 3} more" if len(begun or keys) > 3 else ""
    trials = f"{len(keys)} trials" if len(keys) > 1 else "trial"
    return f"{line}; accepted: a trial_key of its {trials} ({some}{more}), or path= another store"


def export(
    trial: str | Mapping[str, Any],
    out: str | os.PathLike,
    *,
    path: str | os.PathLike | None = None,
    format: str = "pt",
) -> Path:
    """Write a trial's model as a deployable file: ``pt`` (a plain ``state_dict`` beside what
    rebuilds it; `read_model` and ``model.checkpoint=`` both read it) or ``onnx``.

    Raises:
        ConfigError: Unknown format, ``onnx`` not installed, or no such trial.
    """
    if format not in SUFFIXES:
        raise ConfigError(f"--format={format!r} is not supported; accepted: pt | onnx")
    if format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ConfigError("--format=onnx needs the onnx package; accepted: pip install onnx")
    target = Path(out).expanduser()
    if target.suffix not in SUFFIXES[format]:
        raise ConfigError(
            f"--out={str(out)!r} does not end in {' or '.join(SUFFIXES[format])}, the suffix of "
            f"--format={format}; accepted: a file name ending in {' or '.join(SUFFIXES[format])}"
        )
    if not target.parent.is_dir():
        raise ConfigError(
            f"--out={str(out)!r}: the folder {str(target.parent)!r} does not exist; accepted: "
            "a file in an existing folder"
        )
    if target.is_dir():
        raise ConfigError(f"--out={str(out)!r} is a folder; accepted: a file name")
    file = kept_file(trial, path)
    import torch

    from sweep._files import atomic_write

    model = read_model(file)
    record = torch.load(file, map_location="cpu", weights_only=True)
    if format == "pt":
        record.pop("state", None)
        record["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write(target, lambda f: torch.save(record, f))
        return target
    inputs = record["inputs"]
    example = torch.zeros(1, inputs["in_channels"], inputs["image_size"], inputs["image_size"])
    # torch's own exporter: the torch.export one when onnxscript is there, else TorchScript's
    dynamo = importlib.util.find_spec("onnxscript") is not None
    with warnings.catch_warnings():
        # Without onnxscript the TorchScript exporter is the only one there is: its
        # deprecation notice is for torch's maintainers of it, not for this user.
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", category=DeprecationWarning, module=r"torch\.onnx\._internal\.torchscript"
        )
        atomic_write(
            target,
            lambda f: torch.onnx.export(
                model,
                (example,),
                f,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=dynamo,
            ),
        )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sweep.export TRIAL --out FILE [--format pt|onnx] [--store PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sweep.export",
        description="Write a trial's pruned model as a deployable file.",
    )
    parser.add_argument("trial", help="trial key (the trial_key column) or a kept model file")
    parser.add_argument("--out", required=True, help="file to write")
    parser.add_argument("--format", default="pt", help="pt (default) | onnx")
    parser.add_argument("--store", default=None, help="the results store (default: results)")
    args = parser.parse_args(argv)
    try:
        target = export(args.trial, args.out, path=args.store, format=args.format)
    except (ConfigError, FileNotFoundError) as e:  # FileNotFoundError: no store there
        # the function's argument path= is this command's option --store
        print(f"error: {str(e).replace('path= ', '--store ')}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk: nothing half-written is left
        print(f"error: cannot write {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    size = target.stat().st_size
    print(f"wrote {target} ({size / 1e6:.2f} MB, {args.format})")
    if args.format == "pt":
        print(f"load it with: sweep.load_model({str(target)!r})")
    return 0


def _record(
    model: nn.Module,
    spec: Mapping[str, Any],
    inputs: Mapping[str, int],
    reference: nn.Module | None,
    trial_key: str | None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "trial_key": trial_key,
        "model": dict(spec),
        "inputs": dict(inputs),
        "structure": _structure(model, reference) if reference is not None else {},
    }


def _structure(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Per module, the plain attributes (sizes, groups, shapes) that differ from ``reference``."""
    ref = dict(reference.named_modules())
    changed: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        before = ref.get(name)
        if before is None:
            continue
        diff = {
            attr: value
            for attr, value in vars(module).items()
            if not attr.startswith("_") and attr != "training" and _is_plain(value)
            if getattr(before, attr, None) != value
        }
        if diff:
            changed[name] = diff
    return changed


def _is_plain(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, _PLAIN) for v in value)
    return isinstance(value, _PLAIN)


def _reshape(
    model: nn.Module, structure: Mapping[str, Mapping[str, Any]], state: Mapping[str, Any]
) -> None:
    """Give ``model`` the attributes and tensor shapes of the saved (compacted) one."""
    import torch
    from torch import nn

    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    current = model.state_dict()
    for key, tensor in state.items():
        if key not in current or current[key].shape == tensor.shape:
            continue
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        empty = torch.empty(tensor.shape, dtype=current[key].dtype)
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(empty, requires_grad=True)
        else:
            module._buffers[leaf] = empty


if __name__ == "__main__":
    sys.exit(main())
