"""Build the dataset and the model a config names by ``_target_``, with one-line errors.

Used by a trial (`sweep.plan.prepare`) and by `sweep.load_model`, which rebuilds a kept model
from the config its row recorded.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from sweep._imports import locate
from sweep.errors import ConfigError

__all__ = ["BUILD_FACTS", "CODE_KEY", "MODEL_SETTINGS", "build_model", "call_target", "code_digest"]

# What a model builder may learn about its inputs from the dataset.
BUILD_FACTS = ("num_classes", "in_channels", "image_size")
# Keys of a model node that are prune-sweep's, not the builder's.
MODEL_SETTINGS = ("name", "checkpoint", "checkpoint_sha256", "code_sha256")
# The key `code_digest` is recorded under in a model, method or dataset node.
CODE_KEY = "code_sha256"


def build_model(spec: Mapping[str, Any], facts: Mapping[str, int]) -> nn.Module:
    """The model ``spec`` (a resolved ``model`` node) names, for inputs described by ``facts``.

    The dataset facts (`BUILD_FACTS`) are passed to a builder only where its signature takes
    them (or ``**kwargs``), so a user's ``nn.Module`` whose ``__init__`` takes none works too.

    Raises:
        ConfigError: The target does not import, is not callable with these arguments, or does
            not return an ``nn.Module``.
    """
    spec = {k: v for k, v in spec.items() if k not in MODEL_SETTINGS}
    target = spec.get("_target_")
    accepted = "a dotted path to an nn.Module class or a function returning one"
    obj = _locate(target, "model", accepted)
    facts = {k: v for k, v in facts.items() if _takes(obj, k)}
    model = call_target(spec, "model", accepted, **facts)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model._target_={target!r} returned {type(model).__name__}, not an nn.Module; "
            f"accepted: {accepted}"
        )
    return model


def call_target(spec: Mapping[str, Any], group: str, accepted: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of ``spec`` (without its ``name``), errors on one line."""
    spec = {k: v for k, v in spec.items() if k != "name"}
    target = spec.get("_target_")
    _locate(target, group, accepted)
    nested = _nested_targets(spec, group)
    for key, node in nested:  # a user's dataset inside dataset=custom
        _locate(node, key, "a dotted path to a class or function")
    try:
        return instantiate(spec, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        reason = " ".join(str(cause or e).split())  # the whole reason, on one line
        name = type(cause).__name__ if cause is not None else "error"
        # the innermost target whose call failed (Hydra names it), a user's dataset rather
        # than the wrapper around it
        called = re.match(r"Error in call to target '([^']+)'", str(e))
        where = next(
            ((k, t) for k, t in nested if called and str(t) == called.group(1)), (group, target)
        )
        unknown = _unknown_setting(spec, *where, cause)
        if unknown:
            raise ConfigError(unknown) from None
        raise ConfigError(f"{where[0]}._target_={where[1]!r} failed: {name}: {reason}") from None


def _unknown_setting(
    spec: Mapping[str, Any], key: str, target: Any, cause: BaseException | None
) -> str | None:
    """The error for a config key the target does not take (``+dataset.verify_checksums=false``,
    a key an older version had), or ``None`` when the call failed for another reason."""
    if not isinstance(cause, TypeError):
        return None
    node = spec
    for part in key.split(".")[1:]:  # dataset.dataset: the node under spec["dataset"]
        node = node.get(part, {})
    refused = unexpected_setting(_locate(target, key, ""), node, cause)
    if refused is None:
        return None
    arg, params = refused
    accepted = ", ".join(params) if params else "the target's own arguments"
    return f"{key}.{arg}={node[arg]!r} is not a setting of {target!r}; accepted: {accepted}"


def unexpected_setting(
    obj: Any, settings: Mapping[str, Any], cause: BaseException
) -> tuple[str, list[str]] | None:
    """(the setting, ``obj``'s arguments) when ``cause`` is calling ``obj`` with one of
    ``settings`` it does not take; ``None`` when the call failed for another reason (a
    ``TypeError`` raised inside ``obj``'s own code)."""
    found = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    if found is None or found.group(1) not in settings or _takes(obj, found.group(1)):
        return None
    try:
        params = [p.name for p in inspect.signature(obj).parameters.values()]
    except (TypeError, ValueError):
        params = []
    return found.group(1), params


def _locate(target: object, group: str, accepted: str) -> Any:
    try:
        return locate(str(target))
    except ImportError as e:
        raise ConfigError(
            f"{group}._target_={target!r} does not import ({e}); accepted: {accepted}"
        ) from None


def code_digest(spec: Mapping[str, Any]) -> str | None:
    """The first 16 hex digits of a SHA-256 of the source files of the user's own code that
    ``spec`` (a resolved model, method or dataset node) names: its ``_target_``, nested
    ``_target_`` values and a global method's ``pruning_method``. ``None`` when all of it is
    prune-sweep's, an installed library's or Python's.

    A trial and its baseline are keyed by it, as a checkpoint is by its content: editing the
    class makes new trials and a new baseline, never the old ones served as current. The file
    that defines each class or function counts, not the modules it imports.
    """
    files = sorted({f for t in _targets(spec) if (f := _user_file(t)) is not None})
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(_file_digest(str(file), *_stamp(file)).encode())
    return digest.hexdigest()[:16]


def _targets(spec: Mapping[str, Any]) -> list[str]:
    found = [v for k, v in spec.items() if k in ("_target_", "pruning_method")]
    for v in spec.values():
        if isinstance(v, Mapping):
            found += _targets(v)
    return [t for t in found if isinstance(t, str) and "." in t]


def _user_file(target: str) -> Path | None:
    """The source file defining ``target`` when it is the user's own code."""
    try:
        obj = locate(target)
    except ImportError:
        return None  # the build says why
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    file = getattr(module, "__file__", None)
    if not file:
        return None  # defined in __main__ or a notebook: no file to read
    path = Path(file).resolve()
    return None if _is_library(path) else path


def _is_library(path: Path) -> bool:
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return True
    return any(path.is_relative_to(root) for root in _LIBRARY_ROOTS)


_LIBRARY_ROOTS = tuple(
    Path(p).resolve()
    for p in {
        str(Path(__file__).parent),  # prune-sweep's own, installed or not
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
    }
)


def _stamp(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=64)
def _file_digest(file: str, mtime_ns: int, size: int) -> str:
    # read once per version of the file: a sweep's trials share their code
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def _nested_targets(spec: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    found = []
    for k, v in spec.items():
        if isinstance(v, Mapping):
            if "_target_" in v:
                found.append((f"{prefix}.{k}", v["_target_"]))
            found += _nested_targets(v, f"{prefix}.{k}")
    return found


def _takes(obj: Any, name: str) -> bool:
    """Whether calling ``obj`` accepts the keyword ``name`` (directly or via ``**kwargs``)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass everything, as before
        return True
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in params
    )
