"""Which device a config's ``device`` names (``auto``, ``cpu``, ``cuda``, ``cuda:N``), checked
against the GPUs this process sees; seeding the work on one."""

from __future__ import annotations

import torch

from sweep.config import DEVICES
from sweep.errors import ConfigError

__all__ = ["manual_seed", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda``/``cuda:N`` only when that GPU exists."""
    accepted = DEVICES
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


def manual_seed(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` for work on ``device``: on the CPU, the CPU's generator alone.

    ``torch.manual_seed`` also queues the seed for every accelerator not yet initialised, and
    each time it formats the caller's stack for that queue (0.6 ms under a sweep's 60 frames);
    its first call imports ``torch._dynamo`` (about a second). A CPU trial draws from the CPU's
    generator only, seeded here exactly as ``torch.manual_seed`` seeds it.
    """
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
