"""Stable short hashes of configuration values (trial keys, baseline keys)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "HOW_NOT_WHAT",
    "KEYED_UNLESS",
    "NOT_IN_KEY",
    "config_hash",
    "dotted",
    "key_view",
    "mask_password",
]

# Top-level config keys that say where results go or how a run looks, not what it computes:
# left out of a trial's key, and free to change when a study is resumed.
NOT_IN_KEY = (
    "store",
    "progress",
    "skip_completed",
    "optuna",
    "channels_last",
    "fuse",
    "distributed",
)
# (group, key) -> value: settings added after stores existed, left out of keys while they hold
# the value that behaves as before, so that existing trials and baselines keep their keys.
KEYED_UNLESS = {
    ("", "rewind"): "none",  # ("", key): a top-level key
    ("", "rewind_weights"): None,
    ("", "tag"): None,
    ("schedule", "name"): "one_shot",
    ("method", "importance"): "magnitude",
    # read by data-driven criteria only: trial_key drops it whatever its value with magnitude
    ("importance", "batches"): 10,
    ("model", "checkpoint"): None,
    ("dataset", "augment"): False,
    ("recalibrate", "batches"): 0,
    ("latency", "max_repeats"): 200,
    ("latency", "width"): 0.1,
    ("latency", "confidence"): 0.95,
    ("scope", "dense_ends"): False,
    **{
        (stage, key): value
        for stage in ("pretrain", "finetune")
        for key, value in {
            "label_smoothing": 0.0,
            "scheduler": "constant",
            "warmup_epochs": 0,
            "step_gamma": 0.1,
            "step_milestones": [0.5, 0.75],
        }.items()
    },
}
# (group, key): settings that change how fast a result comes, never the result (the batches a
# DataLoader delivers are the same with any number of workers): left out of keys.
HOW_NOT_WHAT = (
    ("latency", "measure"),  # whether a figure is taken, not what the model is
    ("dataset", "num_workers"),
    ("dataset", "pin_memory"),
    ("dataset", "persistent_workers"),
)


def key_view(group: str, node: Any) -> Any:
    """The config node ``group`` as trial and baseline keys see it (see `KEYED_UNLESS`,
    `HOW_NOT_WHAT`)."""
    if not isinstance(node, dict):
        return node
    if group == "scope" and isinstance(node.get("amounts"), dict):
        # {block2: {conv: 0.1}} from the command line is {block2.conv: 0.1} from a file
        node = {**node, "amounts": dotted(node["amounts"])}
    if group == "dataset" and node.get("fingerprint"):
        # data by its content, not where it lies (as a checkpoint by its digest)
        node = {k: v for k, v in node.items() if k != "root"}
    return {
        k: v
        for k, v in node.items()
        if (group, k) not in HOW_NOT_WHAT
        if not ((group, k) in KEYED_UNLESS and KEYED_UNLESS[(group, k)] == v)
    }


def dotted(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``mapping`` with nested mappings flattened into dotted keys, as Hydra nests them.

    Example:
        >>> dotted({"block2": {"conv": 0.1}, "Linear": 0.4})
        {'block2.conv': 0.1, 'Linear': 0.4}
    """
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_hash(value: Any, length: int = 16) -> str:
    """Hex digest of ``value`` serialised as canonical JSON (sorted keys).

    Example:
        >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def mask_password(url: str) -> str:
    """Hide the secrets a database URL can carry, as SQLAlchemy parses it: the password of
    ``user:secret@host`` (an empty user name too) and query parameters such as
    ``?password=secret``. Anything that is not a URL (a journal file path) is returned as it is,
    and so is a URL with no secret.

    Example:
        >>> mask_password("postgresql://u:hunter2@db/sweeps")
        'postgresql://u:***@db/sweeps'
        >>> mask_password("postgresql://:hunter2@db/sweeps?user=u")
        'postgresql://:***@db/sweeps?user=u'
        >>> mask_password("postgresql://db/sweeps?user=u&password=hunter2&sslmode=require")
        'postgresql://db/sweeps?user=u&password=***&sslmode=require'
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(_escaped_user_info(url))
    except (ArgumentError, ValueError):
        return url
    secret_keys = [k for k in parsed.query if k.lower() in _SECRET_QUERY_KEYS]
    if parsed.password is None and not secret_keys:
        return url
    masked = parsed.set(query={}).render_as_string(hide_password=True)
    if not parsed.query:
        return masked
    pairs = [
        f"{key}={'***' if key in secret_keys else value}"
        for key, values in parsed.query.items()
        for value in (values if isinstance(values, tuple) else (values,))
    ]
    return f"{masked}?{'&'.join(pairs)}"


# Query parameters that hold a password (libpq's and the MySQL drivers' names)
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "sslpassword")


def _escaped_user_info(url: str) -> str:
    """``url`` with any ``@`` of its user info percent-encoded: a password holding one would
    otherwise end at its first ``@``, and the rest of it pass for the host."""
    scheme, sep, rest = url.partition("://")
    at = rest.partition("?")[0].rfind("@")
    if not sep or at < 0:
        return url
    return f"{scheme}://{rest[:at].replace('@', '%40')}{rest[at:]}"
