"""What the command line adds around a trial: input checks before Hydra starts, and output."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from hydra import compose, initialize_config_module
from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

__all__ = ["check_overrides", "fail", "summary"]

CONFIG_MODULE = "sweep.conf"


def check_overrides(argv: Sequence[str]) -> None:
    """Compose the config the way Hydra will, and exit with one line if that cannot work.

    Hydra reports an unknown option or key over many lines with a config search path; this
    names the bad value and what is accepted. In a multirun each value of a swept config group
    is checked; flags that change where configs come from are left to Hydra.
    """
    multirun = {"-m", "--multirun"}
    if any(a.startswith("-") and a not in multirun for a in argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if a not in multirun])
    except HydraException as e:
        fail(_first_line(e))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    variants = [fixed]
    for o in parsed:
        if o.is_sweep_override() and "/" not in o.key_or_group and o.is_choice_sweep():
            key = o.get_key_element()
            variants += [[*fixed, f"{key}={v}"] for v in o.sweep_string_iterator()]
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            for overrides in variants:
                compose("config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
        value = _override_value(overrides, group)
        if e.options:
            fail(f"{group}={value!r} is unknown; accepted: {', '.join(sorted(e.options))}")
        fail(str(e).strip().splitlines()[0])
    except (HydraException, OmegaConfBaseException) as e:
        fail(_first_line(e))


def summary(row: Mapping[str, Any]) -> str:
    """One line: method, amount, sparsity, accuracy dense -> pruned -> finetuned, time."""
    amount = row["amount"]
    head = (
        f"{row['method']} amount={amount:.4g}"
        if isinstance(amount, float)
        else (f"{row['method']} amount={amount}")
    )
    if row["status"] == "failed":
        return f"{head}: FAILED: {row['error']} ({row['time_total_s']:.1f} s)"
    acc = " -> ".join(
        f"{row[k]:.3f}"
        for k in ("acc_dense", "acc_pruned", "acc_finetuned")
        if row.get(k) is not None
    )
    return (
        f"{head}: {row['status']}, sparsity {row['sparsity']:.3f}, "
        f"accuracy dense -> pruned -> finetuned {acc}, {row['time_total_s']:.1f} s "
        f"[{row.get('store_file', row['trial_key'])}]"
    )


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _override_value(overrides: Sequence[str], group: str) -> str:
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == group:
            return value
    return group


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__
