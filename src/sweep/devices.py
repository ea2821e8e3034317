"""Which device a config's ``device`` names (``auto``, ``cpu``, ``cuda``, ``cuda:N``), checked
against the GPUs this process sees."""

from __future__ import annotations

import torch

from sweep.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda``/``cuda:N`` only when that GPU exists."""
    accepted = "auto | cpu | cuda | cuda:N"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a device; accepted: {accepted}") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ConfigError(f"device={device!r} is not supported; accepted: {accepted}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but no CUDA GPU is available here; accepted: auto | cpu"
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={device!r} but there are {torch.cuda.device_count()} GPUs; "
            f"accepted: cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return resolved
