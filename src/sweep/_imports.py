"""Resolve a dotted path (``package.module.Name``) to the object, with a one-line reason."""

from __future__ import annotations

import importlib
import traceback
from typing import Any


def locate(path: str) -> Any:
    """Import ``path``; the longest importable module prefix, then attributes.

    Raises:
        ImportError: With a one-line reason (no module, no such attribute).

    Example:
        >>> locate("torch.nn.utils.prune.L1Unstructured").__name__
        'L1Unstructured'
    """
    parts = path.split(".")
    if not path or not all(p.isidentifier() for p in parts):
        raise ImportError(f"{path!r} is not a dotted path")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and not module_name.startswith(e.name):
                raise ImportError(f"importing {module_name} failed: {e}") from None
            continue
        except Exception as e:  # the module's own code raised (a typo, a SyntaxError)
            raise ImportError(_raised(e)) from None
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                raise ImportError(f"module {'.'.join(parts[:split])!r} has no {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def _raised(e: Exception) -> str:
    """``RuntimeError: boom (my_models.py, line 2)``: an error and where it was raised, on one
    line (a SyntaxError says where it lies)."""
    if isinstance(e, SyntaxError):
        text, place = e.msg, (e.filename, e.lineno)
    else:
        frames = traceback.extract_tb(e.__traceback__)
        text, place = str(e), (frames[-1].filename, frames[-1].lineno) if frames else None
    text = " ".join(str(text).split())
    where = f" ({place[0]}, line {place[1]})" if place and place[0] else ""
    return f"{type(e).__name__}: {text}{where}"
