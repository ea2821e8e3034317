"""Stable short hashes of configuration values (trial keys, baseline keys)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = ["config_hash", "mask_password"]


def config_hash(value: Any, length: int = 16) -> str:
    """Hex digest of ``value`` serialised as canonical JSON (sorted keys).

    Example:
        >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def mask_password(url: str) -> str:
    """Hide the secrets a database URL can carry: ``user:secret@host`` and query parameters
    such as ``?password=secret``; other text unchanged.

    Example:
        >>> mask_password("postgresql://u:hunter2@db/sweeps")
        'postgresql://u:***@db/sweeps'
        >>> mask_password("postgresql://db/sweeps?user=u&password=hunter2&sslmode=require")
        'postgresql://db/sweeps?user=u&password=***&sslmode=require'
    """
    url = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&](?:password|passwd|pwd|sslpassword)=)[^&]*", r"\1***", url, flags=re.I)
