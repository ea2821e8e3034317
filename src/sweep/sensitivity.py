"""``python -m sweep.sensitivity``: how much of each layer can go, one layer at a time.

python -m sweep.sensitivity                                   # the default model, method, store
python -m sweep.sensitivity model=mlp method=ln_structured --tolerance 0.02
python -m sweep.sensitivity --amounts 0.25,0.5,0.75,0.9 store.path=results/sens

Every layer in scope is pruned alone (the others stay dense) at every amount of the grid, its
BatchNorm statistics recalibrated and nothing finetuned; each of these is an ordinary trial
(`sweep.trial.run_trial`) tagged ``sensitivity``, written to the store, and skipped when the
store already holds it complete. Per layer, the highest amount whose accuracy after
recalibration (``acc_recalibrated``) stays within the tolerance of dense is printed and saved
as ``<store>/sensitivity/amounts.yaml``, a Hydra config that sets ``scope.amounts``; it is
applied with ``python -m sweep --config-dir <store> +sensitivity=amounts``. The accuracy of
every layer against the amount is plotted to ``<store>/sensitivity/accuracy.png``.

In Python::

    from sweep import sensitivity
    table = sensitivity.run(cfg)                   # one row per layer and amount
    table = sensitivity.load("results")            # the same rows, read back from a store
    table = table[table.model == "small_cnn"]      # one analysis (of one model and method)
    sensitivity.highest_within(table, 0.01)        # one row per layer
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import numbers
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sweep._console import show_progress
from sweep.analysis import (
    SENSITIVITY_TAG,
    check_one_analysis,
    check_tolerance,
    plot_sensitivity,
    varying,
)
from sweep.cli import check_overrides
from sweep.errors import ConfigError, fail
from sweep.store import load_layers, load_results

__all__ = [
    "AMOUNTS",
    "TAG",
    "TOLERANCE",
    "check_amounts",
    "check_tolerance",
    "highest_within",
    "layers_in_scope",
    "load",
    "main",
    "run",
    "save_amounts",
]

log = logging.getLogger("sweep")

TAG = SENSITIVITY_TAG
# The grid each layer is pruned at, and the accuracy drop still accepted (one point).
AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
TOLERANCE = 0.01
# What every trial of the analysis sets, whatever the command line says: the layer's amount
# comes from scope.amounts alone, accuracy is read before finetuning (acc_recalibrated).
FORCED = ("amount=0.0", "finetune.epochs=0", f"tag={TAG}", "skip_completed=true")
# Defaults of the command that its overrides may change: a model file per trial is rarely
# wanted from a diagnostic (store.models=sparse keeps them).
DEFAULTS = ("store.models=none",)
# Where the results go, under the store; FOLDER is also the Hydra group of the saved amounts.
FOLDER = "sensitivity"
AMOUNTS_FILE = "amounts.yaml"
PLOT_FILE = "accuracy.png"
# Columns of the table `run` and `load` return, in order.
COLUMNS = (
    "layer",
    "amount",
    "numel",
    "status",
    "acc_dense",
    "acc_pruned",
    "acc_recalibrated",
    "recalibrated",
    "drop",
    "model",
    "dataset",
    "method",
    "trial_key",
    "from_store",
    "error",
)
_AMOUNTS_ACCEPTED = "fractions in [0, 1) separated by commas, such as 0.1,0.5,0.9"
_PREFIX = "scope.amounts."
# The flags of Hydra's command line (python -m sweep --hydra-help), passed on to it.
_HYDRA_FLAGS = frozenset(
    {
        *("--hydra-help", "--version", "--cfg", "-c", "--resolve", "--package", "-p"),
        *("--run", "-r", "--shell-completion", "-sc", "--config-path", "-cp"),
        *("--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"),
    }
)
_NOTHING_PRUNED = (
    "method={} prunes nothing, so no layer can be measured; accepted: a pruning method, "
    "such as method=l1_unstructured"
)
_NO_AMOUNT = (
    "method={} ({}) takes no amount: it prunes alike at every amount, so no layer can be measured "
    "at amounts; accepted: a method whose constructor takes amount, such as method=l1_unstructured"
)


def run(cfg: DictConfig, amounts: Sequence[float] = AMOUNTS) -> pd.DataFrame:
    """Prune each layer in scope alone at each of ``amounts`` and measure the accuracy.

    Each (layer, amount) is a trial of ``cfg`` with ``amount=0.0``, ``scope.amounts={layer:
    amount}``, ``finetune.epochs=0``, ``tag=sensitivity`` and ``skip_completed=true``
    (`FORCED`; a ``scope.amounts`` of ``cfg`` is replaced), run by `sweep.trial.run_trial`: it
    reuses the cached dense baseline, recalibrates BatchNorm, writes its row to the store, and
    returns the stored row without running when the store has it complete. Everything is
    checked before the first trial runs: bad input raises and writes nothing.

    Args:
        cfg: A composed ``conf/config.yaml`` (any model, dataset, method, scope...). Its
            ``store.models`` holds: a model file per trial unless ``none`` (the command's
            default).
        amounts: Fractions in [0, 1) each layer is pruned by; sorted, duplicates dropped.

    Returns:
        One row per layer (in model order) and amount: see `COLUMNS`. ``amount`` is the
        layer's, ``numel`` its prunable entries, ``drop`` is ``acc_dense - acc_recalibrated``,
        ``from_store`` says the row was complete in the store already.

    Raises:
        ConfigError: An amount outside [0, 1), method ``none``, or what a trial refuses;
            one line naming the value and what is accepted.

    Example:
        >>> from hydra import compose, initialize_config_module
        >>> with initialize_config_module("sweep.conf", version_base="1.3"):  # doctest: +SKIP
        ...     table = run(compose("config", ["model=mlp"]), [0.5, 0.9])
        >>> table.pivot(index="layer", columns="amount", values="drop")  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from sweep.cli import summary
    from sweep.store import check_writable
    from sweep.trial import run_trial

    amounts = check_amounts(amounts)
    if cfg.scope.amounts:
        log.warning(
            "scope.amounts=%s is replaced: the analysis prunes one layer at a time",
            OmegaConf.to_container(cfg.scope.amounts),
        )
    base = _base_config(cfg)
    layers = layers_in_scope(base, amounts)
    check_writable(base.store.path)  # last: refused input creates nothing
    rows = []
    bar = tqdm(
        total=len(layers) * len(amounts),
        desc="sensitivity",
        unit="trial",
        disable=not show_progress(cfg.progress),
    )
    with bar:
        for layer, numel in layers.items():
            for amount in amounts:
                bar.set_postfix_str(f"{layer} at {amount:g}")
                trial = _layer_config(base, layer, amount)
                # the first trial's bars show the baseline trained; later ones only flicker
                trial.progress = show_progress(cfg.progress) and not rows
                row = run_trial(trial)
                log.info("%s %s: %s", layer, f"{amount:g}", summary(row))
                rows.append(_measurement(row, layer, amount, numel))
                bar.update()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def layers_in_scope(cfg: DictConfig, amounts: Sequence[float] = AMOUNTS) -> dict[str, int]:
    """The layers a sensitivity analysis of ``cfg`` prunes, each with its prunable entries.

    Builds the dataset and model (`sweep.plan.prepare`, on the CPU, nothing written) and plans
    every layer at every amount, so that a refusal comes before any trial runs.

    Args:
        cfg: A composed ``conf/config.yaml``; its ``amount`` and ``scope.amounts`` do not
            matter (`FORCED`).
        amounts: The grid, checked (`check_amounts`).

    Returns:
        Layer name -> entries of its weights in scope, in the model's registration order.

    Raises:
        ConfigError: Method ``none``, or a layer the method cannot prune at an amount.
    """
    from sweep.plan import prepare
    from sweep.pruning import Scope, plan_pruning

    cfg = _base_config(cfg)
    plan = prepare(cfg, check_store=False)
    if plan.method.cls is None:
        raise ConfigError(_NOTHING_PRUNED.format(plan.method.name))
    if not plan.method.takes_amount:
        raise ConfigError(_NO_AMOUNT.format(plan.method.name, plan.method.cls.__qualname__))
    layers: dict[str, int] = {}
    for target in plan_pruning(plan.model, plan.method, 0.0, plan.scope):
        layers[target.name] = layers.get(target.name, 0) + target.weight.numel()
    scope = OmegaConf.to_container(cfg.scope, resolve=True)
    for layer in layers:
        for amount in amounts:
            single = Scope.from_config({**scope, "amounts": {layer: amount}})
            plan_pruning(plan.model, plan.method, 0.0, single)
    return layers


def load(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The rows of every sensitivity analysis in a store, as `run` returned them.

    A store may hold several analyses (models, methods, seeds); filter on ``model``,
    ``dataset`` and ``method`` before `highest_within` or `sweep.analysis.plot_sensitivity`,
    which refuse a table of several (and average seeds per layer and amount).

    Args:
        path: The store folder (default ``results``).

    Returns:
        One row per trial tagged ``sensitivity``: see `COLUMNS` (``from_store`` is true),
        then the config columns whose values tell the store's analyses apart besides model,
        dataset, method and seed (``model.hidden`` where two widths were analysed); layers in
        model order, then amounts ascending.

    Example:
        >>> table = load("results")  # doctest: +SKIP
        >>> highest_within(table[table.method == "l1_unstructured"], 0.01)  # doctest: +SKIP
    """
    df = load_results(path)
    rows = df[df["tag"].isin([TAG])] if "tag" in df.columns else df.iloc[:0]
    entries = rows[[c for c in rows.columns if c.startswith(_PREFIX)]]
    layer_of = entries.notna().idxmax(axis=1).str.removeprefix(_PREFIX) if len(entries) else None
    table = rows.assign(
        layer=layer_of,
        amount=entries.max(axis=1) if len(entries) else None,
        drop=rows["acc_dense"] - rows["acc_recalibrated"],
        from_store=True,
    )
    layers = load_layers(path)
    layers = layers[layers["trial_key"].isin(table["trial_key"]) & layers["in_scope"].eq(True)]
    numel = layers.groupby(["trial_key", "layer"], sort=False)["numel"].sum()
    table["numel"] = [
        numel.get((k, name)) for k, name in zip(table.trial_key, table.layer, strict=True)
    ]
    order = {name: i for i, name in enumerate(dict.fromkeys(layers["layer"]))}
    table = table.assign(_order=table["layer"].map(order))
    table = table.sort_values(["_order", "amount"], kind="stable")
    # what else tells analyses apart (model.hidden): highest_within refuses to average them
    ordinary = rows.assign(tag=None)
    apart = [c for c in varying(ordinary) if "." in c and not c.startswith(_PREFIX)]
    out = table.reindex(columns=[*COLUMNS, *apart]).reset_index(drop=True)
    out["numel"] = out["numel"].astype("Int64")
    return out


def highest_within(table: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per layer, the highest amount whose accuracy drop from dense is within ``tolerance``.

    The drop is ``acc_dense - acc_recalibrated``, averaged per layer and amount over the
    table's complete rows (several seeds average); "within" includes the tolerance itself. A
    layer where no amount stays within gets 0.0: leave it dense. Each amount is judged with
    only its own layer pruned; pruned together, the layers lose more than each alone.

    Args:
        table: The rows of one analysis (`run`, or `load` filtered to one).
        tolerance: The accuracy drop accepted, a fraction in [0, 1] (0.01: one point).

    Returns:
        One row per layer, in the table's order: ``layer``, ``numel``, ``amount``,
        ``acc_recalibrated`` and ``drop`` at that amount (NaN at 0.0 when no amount is within,
        unless 0.0 was measured).

    Raises:
        ConfigError: ``tolerance`` outside [0, 1], or a table of several analyses (models,
            datasets or methods: `sweep.analysis.check_one_analysis`).

    Example:
        >>> table = pd.DataFrame({"layer": ["fc1", "fc1", "fc2", "fc2"], "amount": [0.5, 0.9] * 2,
        ...                       "acc_dense": 0.9, "acc_recalibrated": [0.895, 0.8, 0.7, 0.6]})
        >>> highest_within(table, 0.01)[["layer", "amount"]].to_dict("records")
        [{'layer': 'fc1', 'amount': 0.5}, {'layer': 'fc2', 'amount': 0.0}]
    """
    tolerance = check_tolerance(tolerance)
    check_one_analysis(table)
    done = table[table["status"].isin(["complete"])] if "status" in table.columns else table
    points = (
        done.groupby(["layer", "amount"], sort=False)[["acc_dense", "acc_recalibrated"]]
        .mean()
        .reset_index()
    )
    points["drop"] = points["acc_dense"] - points["acc_recalibrated"]
    numel = table.groupby("layer", sort=False)["numel"].first() if "numel" in table else {}
    rows = []
    for layer in dict.fromkeys(table["layer"]):
        mine = points[points["layer"] == layer]
        within = mine[mine["drop"] <= tolerance + 1e-9]  # "within 1%": 0.99 - 0.98 is within
        best = within.loc[within["amount"].idxmax()] if len(within) else None
        rows.append(
            {
                "layer": layer,
                "numel": numel.get(layer) if len(numel) else None,
                "amount": float(best["amount"]) if best is not None else 0.0,
                "acc_recalibrated": best["acc_recalibrated"] if best is not None else math.nan,
                "drop": best["drop"] if best is not None else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["layer", "numel", "amount", "acc_recalibrated", "drop"])


def save_amounts(
    amounts: Mapping[str, float] | pd.DataFrame, path: str | os.PathLike, note: str = ""
) -> Path:
    """Write per-layer amounts as a Hydra config that sets ``scope.amounts`` (package
    ``_global_``): ``python -m sweep --config-dir DIR +GROUP=NAME`` applies ``DIR/GROUP/NAME.yaml``.

    Args:
        amounts: Layer name -> amount, a fraction in [0, 1); or `highest_within`'s table (its
            ``layer`` and ``amount`` columns).
        path: The ``.yaml`` file (its folder is created).
        note: Comment lines written under the package header.

    Returns:
        ``path``.

    Raises:
        ConfigError: An amount that is not a fraction in [0, 1), or a path that is not a
            ``.yaml`` file; nothing is written.

    Example:
        >>> save_amounts({"block2.conv": 0.6}, "results/sensitivity/amounts.yaml")  # doctest: +SKIP
    """
    if isinstance(amounts, pd.DataFrame) and {"layer", "amount"} <= set(amounts.columns):
        amounts = dict(zip(amounts["layer"], amounts["amount"], strict=True))
    if not isinstance(amounts, Mapping):
        raise ConfigError(
            f"amounts is a {type(amounts).__name__}; accepted: a mapping of layer names to "
            "fractions in [0, 1), or the table of highest_within"
        )
    for layer, amount in amounts.items():
        if not _is_fraction(amount):
            raise ConfigError(
                f"amounts[{layer!r}]={amount!r} is not a fraction in [0, 1); accepted: a "
                "fraction of each layer, such as 0.6"
            )
    path = Path(path).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(
            f"path={str(path)!r} is not a .yaml file; accepted: DIR/GROUP/NAME.yaml, applied "
            "with python -m sweep --config-dir DIR +GROUP=NAME"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    body = OmegaConf.to_yaml({"scope": {"amounts": {str(k): float(v) for k, v in amounts.items()}}})
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in note.splitlines())
    path.write_text(f"# @package _global_\n{comments}{body}")
    return path


def _is_fraction(amount: object) -> bool:
    """A number in [0, 1): a fraction of a layer's entries (not a count, not NaN)."""
    return not isinstance(amount, bool) and isinstance(amount, numbers.Real) and 0 <= amount < 1


def check_amounts(amounts: Sequence[float], name: str = "amounts") -> tuple[float, ...]:
    """``amounts`` sorted without duplicates; `ConfigError` unless each is a fraction in [0, 1).

    Example:
        >>> check_amounts([0.5, 0.1, 0.5])
        (0.1, 0.5)
    """
    if isinstance(amounts, str) or not isinstance(amounts, Sequence) or not amounts:
        raise ConfigError(
            f"{name}={amounts!r} is not a list of amounts; accepted: {_AMOUNTS_ACCEPTED}"
        )
    for a in amounts:
        if not _is_fraction(a):
            raise ConfigError(
                f"{name} entry {a!r} is outside [0, 1); accepted: {_AMOUNTS_ACCEPTED}"
            )
    return tuple(sorted({float(a) for a in amounts}))


def main(argv: Sequence[str] | None = None) -> None:
    """The command: own flags first, the rest composed by Hydra as ``python -m sweep`` does."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = _parser().parse_known_args(argv)
    try:
        amounts = check_amounts(_numbers(args.amounts, "--amounts"), "--amounts")
        tolerance = check_tolerance(args.tolerance, "--tolerance")
    except ConfigError as e:
        fail(str(e))
    if {"-m", "--multirun"} & set(overrides):
        fail(
            "-m: python -m sweep.sensitivity runs its own grid of layers x amounts; accepted: "
            "overrides without -m (one analysis per command)"
        )
    for arg in overrides:
        flag = arg.partition("=")[0]
        if arg.startswith("-") and flag not in _HYDRA_FLAGS:
            fail(
                f"{flag} is not an option; accepted: --amounts, --tolerance, Hydra's own flags "
                "(--cfg, --config-dir...) and overrides key=value"
            )
    _refuse_method_none(overrides)
    flags, overrides = _flags_first(overrides)
    # Hydra reads its flags before the overrides only; FORCED after DEFAULTS: what a user sets
    # there is replaced by `run` anyway
    argv = [*flags, *DEFAULTS, *FORCED, *overrides]
    check_overrides(argv)  # the command line's values, one line
    import hydra

    @hydra.main(config_path="pkg://sweep.conf", config_name="config", version_base="1.3")
    def analyse(cfg: DictConfig) -> None:
        _command(cfg, amounts, tolerance, overrides)

    sys.argv = [sys.argv[0], *argv]
    analyse()


def _flags_first(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) and the overrides among ``words``, each in order."""
    from hydra._internal.utils import get_args_parser

    args, extra = get_args_parser().parse_known_args(list(words))
    overrides = [*args.overrides, *(w for w in extra if not w.startswith("-"))]
    flags = list(words)
    for o in overrides:
        flags.remove(o)
    return flags, overrides


def _command(
    cfg: DictConfig, amounts: Sequence[float], tolerance: float, overrides: Sequence[str]
) -> None:
    """Run the analysis, print its table, write the plot and the amounts, print the command."""
    start = time.perf_counter()
    try:
        table = run(cfg, amounts)
    except ConfigError as e:
        fail(str(e))
    result = highest_within(table, tolerance)
    folder = Path(cfg.store.path).expanduser() / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    plot = folder / PLOT_FILE
    plot_sensitivity(table, tolerance).savefig(plot, dpi=120)
    apply = _apply_command(str(folder.parent), overrides)
    saved = save_amounts(
        dict(zip(result["layer"], result["amount"], strict=True)),
        folder / AMOUNTS_FILE,
        note=_note(table, tolerance, apply),
    )
    print(_text(table, result, tolerance, time.perf_counter() - start))
    print(f"plot: {plot}")
    print(f"amounts: {saved}")
    print(f"apply: {apply}")
    failed = table[table["status"] != "complete"]
    if len(failed):
        for r in failed.itertuples():
            print(f"{r.layer} at {r.amount:g}: {r.status}: {r.error}", file=sys.stderr)
        sys.exit(1)


def _text(table: pd.DataFrame, result: pd.DataFrame, tolerance: float, seconds: float) -> str:
    """The head line, then one line per layer: accuracy at each amount, and the amount kept."""
    done = table[table["status"] == "complete"]
    dense = done["acc_dense"].mean() if len(done) else math.nan
    reused = int(table["from_store"].sum())
    first = table.iloc[0]
    lines = [
        f"layer sensitivity of {first['model']} on {first['dataset']} to {first['method']}: "
        f"{_count(table['layer'].nunique(), 'layer')} x "
        f"{_count(table['amount'].nunique(), 'amount')} = "
        f"{_count(len(table), 'trial')} ({len(table) - reused} run, {reused} already in the "
        "store), "
        f"{seconds:.1f} s",
        f"{_stage(table)}, one layer pruned, dense {dense:.4f}; "
        f"highest amount within {tolerance:g} of dense:",
    ]
    grid = table.pivot_table(
        index="layer", columns="amount", values="acc_recalibrated", aggfunc="mean", sort=False
    ).reindex(index=result["layer"])
    width = max(5, *(len(str(layer)) for layer in result["layer"]))
    header = f"{'layer':<{width}}  {'weights':>8}" + "".join(f"{a:>7g}" for a in grid.columns)
    lines.append(f"{header}  {'amount':>6}")
    for r in result.itertuples():
        accs = "".join(f"{v:>7.3f}" if not pd.isna(v) else f"{'-':>7}" for v in grid.loc[r.layer])
        numel = "-" if pd.isna(r.numel) else str(int(r.numel))
        lines.append(f"{r.layer:<{width}}  {numel:>8}{accs}  {r.amount:>6g}")
    return "\n".join(lines)


def _stage(table: pd.DataFrame) -> str:
    """What the accuracies are: recalibrated, or as pruned for a model without BatchNorm."""
    if table["recalibrated"].isna().all() or table["recalibrated"].fillna(False).astype(bool).any():
        return "accuracy after BatchNorm recalibration"
    return "accuracy as pruned (no BatchNorm to recalibrate)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _note(table: pd.DataFrame, tolerance: float, apply: str) -> str:
    first = table.iloc[0]
    return (
        "Layer sensitivity (python -m sweep.sensitivity): per layer, the highest amount whose\n"
        f"{_stage(table)}, that layer alone pruned, stays within\n"
        f"{tolerance:g} of dense; {first['method']} on {first['model']} / {first['dataset']}.\n"
        "Apply with:\n"
        f"{apply}"
    )


def _apply_command(store: str, overrides: Sequence[str]) -> str:
    """``python -m sweep --config-dir STORE +sensitivity=amounts`` and the user's overrides
    that still make sense for a trial (the analysis' own settings dropped)."""
    own = {"amount", "tag", "skip_completed", "scope.amounts"}
    kept = [
        o
        for o in overrides
        if (key := o.lstrip("+~").partition("=")[0]) not in own and not key.startswith(_PREFIX)
    ]
    words = ["python", "-m", "sweep", "--config-dir", store, f"+{FOLDER}=amounts", *kept]
    return " ".join(shlex.quote(w) for w in words)


def _base_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` as every trial of the analysis has it (`FORCED`), ``scope.amounts`` null."""
    base = copy.deepcopy(cfg)
    base.amount = 0.0
    base.finetune.epochs = 0
    base.tag = TAG
    base.skip_completed = True
    base.scope.amounts = None
    return base


def _layer_config(base: DictConfig, layer: str, amount: float) -> DictConfig:
    cfg = copy.deepcopy(base)
    cfg.scope.amounts = {layer: amount}
    return cfg


def _measurement(row: Mapping[str, Any], layer: str, amount: float, numel: int) -> dict:
    acc = row.get("acc_recalibrated")
    dense = row.get("acc_dense")
    return {
        "layer": layer,
        "amount": amount,
        "numel": numel,
        "status": row["status"],
        "acc_dense": dense,
        "acc_pruned": row.get("acc_pruned"),
        "acc_recalibrated": acc,
        "recalibrated": row.get("recalibrated"),
        "drop": dense - acc if dense is not None and acc is not None else math.nan,
        "model": row.get("model"),
        "dataset": row.get("dataset"),
        "method": row.get("method"),
        "trial_key": row["trial_key"],
        "from_store": row.get("store_file") == "already in the store",
        "error": row.get("error"),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.sensitivity",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=(
            "Every other argument is an override of the trial config, as for python -m sweep "
            "(python -m sweep --help lists the groups), e.g. model=mlp method=ln_structured."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--amounts",
        default=",".join(f"{a:g}" for a in AMOUNTS),
        help=f"the grid each layer is pruned at: {_AMOUNTS_ACCEPTED} (default: %(default)s)",
    )
    parser.add_argument(
        "--tolerance",
        default=str(TOLERANCE),
        help="accuracy drop from dense still accepted, a fraction in [0, 1] (default: %(default)s)",
    )
    return parser


def _numbers(text: str, name: str) -> list[float]:
    parts = [p.strip() for p in text.strip().strip("[]").split(",")]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a list of numbers; accepted: {_AMOUNTS_ACCEPTED}"
        ) from None


def _refuse_method_none(overrides: Sequence[str]) -> None:
    """Methods ``none`` and ``nm`` are refused before `check_overrides` creates the store (`run`
    refuses them too, and a user's method without an amount, chosen elsewhere)."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "method" and value == "none":
            fail(_NOTHING_PRUNED.format(value))
        if key == "method" and value == "nm":
            fail(_NO_AMOUNT.format(value, "NMSparsity"))


if __name__ == "__main__":
    main()
