"""Build the dataset and the model a config names by ``_target_``, with one-line errors.

Used by a trial (`sweep.plan.prepare`) and by `sweep.load_model`, which rebuilds a kept model
from the config its row recorded.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import sysconfig
from collections.abc import Mapping, Sequence
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
    """The first 16 hex digits of the SHA-256 of the user's own code that ``spec`` (a resolved
    model, method or dataset node) names: its ``_target_``, nested ``_target_`` values and a
    global method's ``pruning_method``. ``None`` when all of it is prune-sweep's, an installed
    library's or Python's.

    One file gives its own SHA-256 (``sha256sum my_models.py``); several, the SHA-256 of their
    digests. A class defined in a notebook or ``__main__`` counts by its source text where
    Python can read it. A module counts as it was when this process first saw it: the code that
    runs, whatever the file says after an edit made while a sweep runs.

    A trial and its baseline are keyed by it, as a checkpoint is by its content: editing the
    class makes new trials and a new baseline, never the old ones served as current. The file
    that defines each class or function counts, not the modules it imports.
    """
    digests = sorted({d for t in _targets(spec) if (d := _user_code(t)) is not None})
    if not digests:
        return None
    if len(digests) == 1:
        return digests[0][:16]
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def _targets(spec: Any) -> list[str]:
    """The ``_target_`` (and ``pruning_method``) values in ``spec``, in its mappings and lists
    (a transform of the user's inside ``Compose``'s ``transforms``) at any depth."""
    found = []
    if isinstance(spec, Mapping):
        found = [v for k, v in spec.items() if k in ("_target_", "pruning_method")]
        values = spec.values()
    elif isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        values = spec
    else:
        return []
    for v in values:
        found += _targets(v)
    return [t for t in found if isinstance(t, str) and "." in t]


def _user_code(target: str) -> str | None:
    """The SHA-256 (hex) of the code defining ``target`` when it is the user's own."""
    try:
        obj = locate(target)
    except ImportError:
        return None  # the build says why
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None:
        return None
    if not getattr(module, "__file__", None):  # a notebook redefines classes in one module
        return _module_digest(module, obj)
    # importlib.reload (or IPython's autoreload) runs the edited file in the same module
    # object, under a new __spec__: hashed again
    seen = _SEEN.get(module.__name__)
    if seen is not None and seen[0] is module and seen[1] is module.__spec__:
        return seen[2]
    digest = _module_digest(module, obj)
    _SEEN[module.__name__] = (module, module.__spec__, digest)
    return digest


def _module_digest(module: Any, obj: Any) -> str | None:
    file = getattr(module, "__file__", None)
    if not file:  # a notebook's cell or __main__ without a file: the source Python keeps
        source = _source_text(obj)
        return None if source is None else hashlib.sha256(source.encode()).hexdigest()
    path = Path(file).resolve()
    if _is_library(path):
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # inside a zip, gone: what its loader holds, if anything
        try:
            source = module.__loader__.get_source(module.__name__)
        except Exception:
            return None
        return None if source is None else hashlib.sha256(source.encode()).hexdigest()


def _source_text(obj: Any) -> str | None:
    """The source of a function or class defined without a file (a notebook's cell), where
    Python keeps it; a class by its bases, its methods' source and its other attributes
    (``inspect.getsource`` cannot find a class without its module's file)."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        if not inspect.isclass(obj):
            return None
    bases = ", ".join(f"{b.__module__}.{b.__qualname__}" for b in obj.__bases__)
    parts = [f"class {obj.__qualname__}({bases})"]
    for name, member in sorted(vars(obj).items()):
        if isinstance(member, property):
            functions = [f for f in (member.fget, member.fset, member.fdel) if f is not None]
        else:
            functions = [getattr(member, "__func__", member)]
        if all(inspect.isfunction(f) for f in functions):
            try:
                parts += [inspect.getsource(f) for f in functions]
            except (OSError, TypeError):
                return None
        elif name.startswith("__"):
            continue  # __module__, __dict__, __doc__...
        elif (text := _stable_repr(member)) is not None:
            parts.append(f"{name} = {text}")
        else:  # an object's repr may hold its address (an ABC's _abc_impl): its type only
            parts.append(f"{name}: {type(member).__module__}.{type(member).__qualname__}")
    return "\n".join(parts)


def _stable_repr(value: Any) -> str | None:
    """``repr(value)`` where it is the same in every process (plain data; a set's items
    sorted, as hash randomisation orders them anew each run), else ``None``."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value)
    if isinstance(value, dict):
        items = [(_stable_repr(k), _stable_repr(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in items):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if not isinstance(value, list | tuple | set | frozenset):
        return None
    texts = [_stable_repr(v) for v in value]
    if any(t is None for t in texts):
        return None
    inside = ", ".join(sorted(texts) if isinstance(value, set | frozenset) else texts)  # type: ignore[arg-type]
    if isinstance(value, list):
        return f"[{inside}]"
    if isinstance(value, tuple):
        return f"({inside}{',' * (len(texts) == 1)})"
    if not value:
        return f"{type(value).__name__}()"
    return f"{{{inside}}}" if isinstance(value, set) else f"frozenset({{{inside}}})"


# module name -> (the module object, its __spec__, its digest) as first seen: reimported or
# reloaded, it is hashed again
_SEEN: dict[str, tuple[Any, Any, str | None]] = {}


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
