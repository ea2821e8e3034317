"""A user's trained weights as the dense baseline: ``model.checkpoint=PATH``.

The file is read with ``torch.load(weights_only=True)`` (or safetensors), so loading it never
runs code. Accepted: a state dict; a checkpoint dict holding one under a usual key
(`STATE_KEYS`: ``state_dict``, ``model``...); a ``.safetensors`` file. Prefixes that wrappers
add to every key (``module.`` from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``)
are removed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sweep.errors import ConfigError

__all__ = ["STATE_KEYS", "file_digest", "fit", "read_state"]

# Where training scripts usually keep the weights inside a checkpoint dict, in the order tried.
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "module")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_ACCEPTED = (
    "a state dict saved with torch.save(model.state_dict()), a checkpoint dict holding one "
    f"under {' / '.join(STATE_KEYS)}, or a .safetensors file"
)

_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes (first 16 hex digits), cached per path, size and mtime."""
    p = Path(path).resolve()
    stat = p.stat()
    cache_key = (str(p), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _digests:
        digest = hashlib.sha256()
        with p.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _digests[cache_key] = digest.hexdigest()[:16]
    return _digests[cache_key]


def read_state(path: str | os.PathLike, key: str = "model.checkpoint") -> dict[str, torch.Tensor]:
    """The state dict in the checkpoint file ``path``, on the CPU; ``key`` names the setting
    that gave the path in errors.

    Raises:
        ConfigError: The file is missing, unreadable, refused by ``weights_only=True`` (a whole
            pickled ``nn.Module``), or holds no state dict.
    """
    where = f"{key}={str(path)!r}"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where} is not a file; accepted: {_ACCEPTED}")
    if p.suffix == ".safetensors":
        obj = _read_safetensors(p, where)
    elif not _torch_file(p):
        raise ConfigError(
            f"{where} is not a torch file (no zip or pickle header); accepted: {_ACCEPTED}"
        )
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "weights_only" not in str(e) and "Weights only" not in str(e):
                raise ConfigError(
                    f"{where} is not a torch file ({first}); accepted: {_ACCEPTED}"
                ) from None
            raise ConfigError(
                f"{where} holds Python objects that loading with weights_only=True refuses "
                f"(a whole model saved with torch.save(model)?); accepted: {_ACCEPTED}"
            ) from None
        except Exception as e:
            first = " ".join(str(e).split())[:200] or type(e).__name__
            raise ConfigError(
                f"{where} is not a torch file ({type(e).__name__}: {first}); accepted: {_ACCEPTED}"
            ) from None
    state = _find_state(obj)
    if state is None:
        raise ConfigError(f"{where} holds no state dict ({_describe(obj)}); accepted: {_ACCEPTED}")
    return _unwrap(state)


def fit(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    key: str = "model.checkpoint",
) -> None:
    """Load ``state`` into ``model``, or explain in one line why it does not fit; ``key``
    names the setting that gave ``path``.

    Raises:
        ConfigError: Names the first missing, unexpected or mismatched key (with both shapes)
            and how many problems there are in all.
    """
    expected = model.state_dict()
    problems = []
    hint = ""
    for k, v in expected.items():  # in the model's order: the first problem is the earliest
        if k not in state:
            problems.append(f"the model's key {k!r} {_shape(v)} is missing from the checkpoint")
        elif tuple(state[k].shape) != tuple(v.shape):
            theirs, ours = _shape(state[k]), _shape(v)
            problems.append(f"key {k!r} has shape {theirs} in the checkpoint, {ours} in the model")
            torchvision = type(model).__module__.startswith("torchvision.")
            if torchvision and len(ours) == len(theirs) == 4 and theirs[2] > ours[2]:
                # an ImageNet stem (7x7) where small inputs built a 3x3 one
                hint = ", or model.small_input=false for weights trained on large images"
    problems += [
        f"the checkpoint's key {k!r} {_shape(v)} is not in the model"
        for k, v in state.items()
        if k not in expected
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(
            f"{key}={str(path)!r} does not fit the model: {problems[0]}{more}; "
            "accepted: the state dict of this architecture, built for this dataset's classes "
            f"and input channels{hint}"
        )
    model.load_state_dict(state)


def _read_safetensors(p: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise ConfigError(
            f"{where} is a .safetensors file but safetensors is not installed; "
            "accepted: pip install safetensors, or a torch.save file"
        ) from None
    try:
        return load_file(p, device="cpu")
    except (SafetensorError, OSError) as e:
        raise ConfigError(
            f"{where} is not a readable safetensors file ({' '.join(str(e).split())}); "
            f"accepted: {_ACCEPTED}"
        ) from None


def _torch_file(p: Path) -> bool:
    """``torch.save``'s zip archive, or its legacy format (a pickle: protocol byte 0x80)."""
    with p.open("rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _is_state(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _find_state(obj: object) -> Mapping[str, torch.Tensor] | None:
    if _is_state(obj):
        return obj
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            if _is_state(obj.get(key)):
                return obj[key]
    return None


def _unwrap(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(state)
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:6]]
        more = ", ..." if len(obj) > 6 else ""
        return f"a dict with keys {', '.join(keys)}{more}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)
