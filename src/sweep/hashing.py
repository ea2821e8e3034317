"""Stable short hashes of configuration values (trial keys, baseline keys)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["config_hash"]


def config_hash(value: Any, length: int = 16) -> str:
    """Hex digest of ``value`` serialised as canonical JSON (sorted keys).

    Example:
        >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
