"""What the command line adds around a trial: input checks before Hydra starts, and output."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException

from sweep.errors import ConfigError
from sweep.store import check_writable

__all__ = ["check_overrides", "fail", "summary"]

CONFIG_MODULE = "sweep.conf"
# Set for the local helper workers a sweep starts (hydra.sweeper.n_jobs): their number.
WORKER_ENV = "SWEEP_WORKER"


def check_overrides(argv: Sequence[str]) -> None:
    """Check the command line the way the trial will, and exit with one line if it cannot work.

    Composes the config as Hydra will (an unknown option or key, a value of the wrong type),
    then checks every value the trial checks before it trains (`sweep.trial.prepare`: ranges,
    builders, amounts against the model's tensors, a writable store). In a multirun, every
    value of every swept key is checked this way before the first job starts. Flags that
    change how Hydra runs (``--cfg``, ``--info``...) are left to Hydra.
    """
    multirun = {"-m", "--multirun"}
    if any(a.startswith("-") and a not in multirun for a in argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if a not in multirun])
    except HydraException as e:
        fail(_first_line(e))
    search = next((o for o in parsed if o.key_or_group == "search"), None)
    if search is not None and not multirun & set(argv) and search.value() not in (None, "null"):
        fail(
            f"search={search.value()} runs an Optuna study of many trials and needs -m; "
            f"accepted: python -m sweep -m search={search.value()} ..."
        )
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    # Combinations the sweep will run: every swept value once, the other swept keys at their
    # first value (the whole product of a large grid would take as long to check as to start).
    swept = {
        o.get_key_element(): list(o.sweep_string_iterator())
        for o in parsed
        if o.is_sweep_override() and "/" not in o.key_or_group
        if o.is_choice_sweep() or o.is_range_sweep()
    }
    first = {key: values[0] for key, values in swept.items() if values}
    variants = [[*fixed, *(f"{k}={v}" for k, v in first.items())]]
    for key, values in swept.items():
        for value in values[1:]:
            variant = {**first, key: value}
            variants.append([*fixed, *(f"{k}={v}" for k, v in variant.items())])
    from sweep.trial import prepare

    datasets: dict[str, Any] = {}  # variants of one grid mostly share their dataset
    stores: set[str] = set()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        for overrides in variants:
            try:
                cfg = compose("config", overrides=overrides, return_hydra_config=True)
                if overrides is variants[0] and _is_optuna(cfg) and multirun & set(argv):
                    from sweep.search import study_settings

                    argv_ = [a for a in argv if a not in multirun]
                    study_settings(cfg.hydra.sweeper, argv_, trial_cfg=cfg)
                with open_dict(cfg):
                    del cfg["hydra"]
                prepare(cfg, datasets=datasets, check_store=False)
                stores.add(cfg.store.path)
            except MissingConfigException as e:
                group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
                value = _override_value(overrides, group)
                if e.options:
                    fail(f"{group}={value!r} is unknown; accepted: {', '.join(sorted(e.options))}")
                fail(str(e).strip().splitlines()[0])
            except ConfigCompositionException as e:
                fail(_composition_error(e, overrides))
            except ConfigError as e:
                fail(str(e))
            except (HydraException, OmegaConfBaseException) as e:
                fail(_first_line(e))
    try:
        for path in sorted(stores):  # last: a refused command creates nothing
            check_writable(path)
    except ConfigError as e:
        fail(str(e))


def summary(row: Mapping[str, Any]) -> str:
    """One line: method, amount, sparsity, accuracy dense -> pruned [-> recalibrated] ->
    finetuned, time, and the trial key (``sweep.load_model(key)`` gives its model back)."""
    amount = row["amount"]
    head = (
        f"{row['method']} amount={amount:.4g}"
        if isinstance(amount, float)
        else (f"{row['method']} amount={amount}")
    )
    head += _per_layer(row)
    if row["status"] == "failed":
        return f"{head}: FAILED: {row['error']} ({row['time_total_s']:.1f} s)"
    stages = ["dense", "pruned", "recalibrated", "finetuned"]
    if not row.get("recalibrated"):
        stages.remove("recalibrated")
    shown = [s for s in stages if row.get(f"acc_{s}") is not None]
    acc = " -> ".join(f"{row[f'acc_{s}']:.3f}" for s in shown)
    return (
        f"{head}: {row['status']}, sparsity {row['sparsity']:.3f}, "
        f"accuracy {' -> '.join(shown)} {acc}, {row['time_total_s']:.1f} s "
        f"[trial {row['trial_key']}: {row.get('store_file', 'not stored')}]"
    )


def _per_layer(row: Mapping[str, Any]) -> str:
    """``scope.amounts`` of the row, as the summary shows them: each when there are a few,
    else their count and range (a per-layer search sets one per layer)."""
    prefix = "scope.amounts."
    amounts = {
        k.removeprefix(prefix): v
        for k, v in row.items()
        if k.startswith(prefix) and isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not amounts:
        return ""
    if len(amounts) <= 3:
        return ", scope.amounts " + ", ".join(f"{k}={v:.4g}" for k, v in amounts.items())
    low, high = min(amounts.values()), max(amounts.values())
    return f", {len(amounts)} scope.amounts from {low:.4g} to {high:.4g}"


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _override_value(overrides: Sequence[str], group: str) -> str:
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == group:
            return value
    return group


def _is_optuna(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "hydra.sweeper._target_", default="").endswith("OptunaSweeper")


def _composition_error(e: ConfigCompositionException, overrides: Sequence[str]) -> str:
    """One line for an override the schema refuses: the key, the value, what is accepted."""
    from sweep import config

    cause = e.__cause__
    full_key = getattr(cause, "full_key", None)
    if not full_key:
        return _first_line(e)
    value = _override_value(overrides, full_key)
    if isinstance(cause, ConfigAttributeError):
        node, _, _ = full_key.rpartition(".")
        valid = config.keys(node) or _present_keys(overrides, full_key, node)
        where = f"of {node}" if node else "in the config"
        return f"{full_key} is not a key {where}; accepted: {', '.join(valid)}"
    accepted = config.accepted(full_key) or "a value of the declared type"
    return f"{full_key}={value!r} is not valid; accepted: {accepted}"


def _present_keys(overrides: Sequence[str], bad_key: str, node: str) -> list[str]:
    # an open node (model, dataset, method): the keys its chosen option has
    rest = [o for o in overrides if o.lstrip("+~").partition("=")[0] != bad_key]
    cfg = compose("config", overrides=rest)
    return sorted(str(k) for k in OmegaConf.select(cfg, node))


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__
