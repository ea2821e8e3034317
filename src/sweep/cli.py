"""What the command line adds around a trial: input checks before Hydra starts, and output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import yaml
from hydra import compose
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException

from sweep._env import stop_grace_s
from sweep.errors import ConfigError, fail
from sweep.store import check_writable

__all__ = ["check_overrides", "summary"]

CONFIG_MODULE = "sweep.conf"
# Hydra's flags that print something instead of running a trial: checked by Hydra itself.
_PRINTING = ("help", "hydra_help", "version", "cfg", "info", "shell_completion")
_PRINTING += ("experimental_rerun",)
# Hydra's override grammar for a value or a sweep of values
_SWEEP_SYNTAX = "key=value, key=a,b,c, choice(a,b), range(start,stop[,step]), interval(low,high)"


def check_overrides(argv: Sequence[str]) -> None:
    """Check the command line the way the trial will, and exit with one line if it cannot work.

    Reads the options as Hydra will (refusing one placed after the overrides, which Hydra's
    parser cannot read), finds the configs where Hydra will (``--config-dir``,
    ``--config-path``, ``--config-name``), composes the config (an unknown option or key, a
    value of the wrong type, a config file that is not YAML), then checks every value the trial
    checks before it trains (`sweep.plan.prepare`: ranges, builders, amounts against the
    model's tensors, a writable store). In a multirun, every value of every swept key is
    checked this way before the first job starts, and a sweep of no values is refused. Flags
    that make Hydra print instead of run (``--cfg``, ``--info``, ``--help``...) are left to it.
    """
    args = _parse_args(argv)
    if any(getattr(args, flag, None) for flag in _PRINTING):
        return
    multirun = bool(args.multirun)
    if multirun:
        try:
            stop_grace_s()
        except ConfigError as e:
            fail(str(e))
        _refuse_a_sweep_under_torchrun()
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as e:
        fail(_override_syntax(e, args.overrides))
    nameless = next((o for o in parsed if not o.key_or_group), None)
    if nameless is not None:  # =3: Hydra's grammar reads an empty key, and fails on it later
        fail(f"{nameless.input_line} names no key; accepted: key=value, such as amount=0.5")
    search = next((o for o in parsed if o.key_or_group == "search"), None)
    if search is not None and not multirun and search.value() not in (None, "null"):
        fail(
            f"search={search.value()} runs an Optuna study of many trials and needs -m; "
            f"accepted: python -m sweep -m search={search.value()} ..."
        )
    _refuse_added_keys(parsed)
    _refuse_loose_bools(parsed)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    from sweep import distributed
    from sweep.plan import prepare

    datasets: dict[str, Any] = {}  # variants of one grid mostly share their dataset
    models: dict[str, Any] = {}  # and their model
    stores: dict[str, str] = {}  # folder: the setting it came from
    config_name = args.config_name or "config"
    hydra_lines = [o.input_line for o in parsed if o.is_hydra_override() and o.input_line in fixed]
    composed: Callable[[list[str]], DictConfig] | None = None
    methods = []  # each variant's pruning method
    searched: list[str] = []  # the parameters an Optuna study searches
    space = None

    def check(overrides: list[str], first: bool = False, searching: str = "") -> None:
        """Compose ``overrides`` and check them as the trial will; ``searching``: the values
        of a study's search space they stand for, named before a refusal's reason."""
        nonlocal composed, searched, space

        def refuse(message: str) -> NoReturn:
            fail(
                f"hydra.sweeper.params gives trials {searching}: {message}"
                if searching
                else message
            )

        try:
            composed = composed or _composer(config_name, hydra_lines)
            cfg = composed(overrides)
            if first:
                _refuse_added_top_level_keys(parsed, cfg)
                _check_output_dir(cfg, multirun)
            if first and _is_optuna(cfg) and multirun:
                from sweep.search import study_settings
                from sweep.search._study import probe_storage

                settings, _ = study_settings(cfg.hydra.sweeper, list(args.overrides), trial_cfg=cfg)
                probe_storage(settings.storage)
                space = settings.space
                searched = [p.name for p in space.params]
            with open_dict(cfg):
                del cfg["hydra"]
            distributed.check(cfg)
            methods.append(prepare(cfg, datasets=datasets, models=models, check_store=False).method)
            stores[cfg.store.path] = "store.path"
            if not cfg.model.get("checkpoint"):  # a checkpoint is the baseline: none is cached
                stores.setdefault(cfg.store.baselines, "store.baselines")
        except MissingConfigException as e:
            if e.missing_cfg_file == config_name:
                refuse(_missing_primary(args, config_name))
            group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
            value = _override_value(overrides, group) or group
            if e.options:
                refuse(f"{group}={value!r} is unknown; accepted: {', '.join(sorted(e.options))}")
            refuse(str(e).strip().splitlines()[0])
        except ConfigCompositionException as e:
            refuse(_composition_error(e, overrides))
        except ConfigError as e:
            refuse(str(e))
        except yaml.YAMLError as e:
            refuse(_yaml_error(e))
        except (HydraException, OmegaConfBaseException) as e:
            refuse(_first_line(e))

    with _config_search_path(args):
        _refuse_a_group_set_to_null(parsed)
        for i, overrides in enumerate(_variants(parsed, fixed)):
            check(overrides, first=i == 0)
        if space is not None:
            # Each value a study may give: a bad one would fail its trials, or leave one
            # running, after the study exists (a group's option, an amount out of range).
            from sweep import config
            from sweep.search._space import overrides as space_overrides

            for values in _space_corners(space):
                shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
                for k, v in values.items():  # {choices: [0, 1]} would compose as false, true
                    refusal = config.is_bool(k) and _loose_bool(k, v)
                    if refusal:
                        fail(f"hydra.sweeper.params gives trials {shown}: {refusal}")
                check([*fixed, *space_overrides(values)], searching=shown)
    if multirun:
        _refuse_amounts_of_a_method_without_one(parsed, methods, searched)
    _check_folders(stores)  # last: a refused command creates nothing


def _refuse_a_group_set_to_null(parsed: Sequence[Any]) -> None:
    """``method=null`` (Hydra raises a ValueError with a traceback for a config group's option
    that is not a name) and ``~method`` (a trial needs its method, model, dataset...)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.types import ChoiceSweep

    from sweep import config

    loader = GlobalHydra.instance().config_loader()
    needed = config.keys("") or []
    for o in parsed:
        if o.is_hydra_override() or "." in o.key_or_group:
            continue
        raw = o.value()
        values = raw.list if isinstance(raw, ChoiceSweep) else [raw]
        group = o.key_or_group
        if o.is_delete():
            if group not in needed:  # ~search: no search
                continue
        elif None not in values:
            continue
        options = loader.get_group_options(group)
        if not options:
            continue
        accepted = ", ".join(options)
        if group in needed:
            fail(
                f"{o.input_line}: every trial needs one of {group}'s options; accepted: {accepted}"
            )
        fail(f"{o.input_line}: {group}'s option is a name; accepted: ~{group} (none), {accepted}")


def _check_folders(folders: Mapping[str, str]) -> None:
    """Check each folder writable (creating it), by the setting it came from (``store.path``,
    ``store.baselines``). A baselines folder inside a store (the default) comes after its
    store, so that a refusal names the value the user gave; one elsewhere comes first, so
    that its refusal leaves no store behind."""
    stores = [
        Path(p).expanduser().absolute() for p, name in folders.items() if name == "store.path"
    ]

    def order(item: tuple[str, str]) -> int:
        path, name = item
        if name == "store.path":
            return 1
        inside = any(Path(path).expanduser().absolute().is_relative_to(s) for s in stores)
        return 2 if inside else 0

    try:
        for path, name in sorted(folders.items(), key=order):
            if name == "store.baselines":
                check_writable(path, name=name, folders=())
            else:
                check_writable(path, name=name)
    except ConfigError as e:
        fail(str(e))


def _refuse_added_keys(parsed: Sequence[Any]) -> None:
    """``+finetune.epoch=1``: Hydra's ``+`` adds a key even to a node of the schema, where
    nothing reads it and it only changes the trial key; refused as the key without ``+`` is.
    Open nodes (``model``, ``dataset``, ``method``, ``scope.amounts``) take any key."""
    from sweep import config

    for o in parsed:
        if not (o.is_add() or o.is_force_add()) or o.is_hydra_override():
            continue
        parts = o.key_or_group.split(".")
        for depth in range(1, len(parts)):  # +finetune.foo.bar=1: foo is not finetune's
            node, leaf = ".".join(parts[:depth]), parts[depth]
            valid = config.keys(node)
            if valid and leaf not in valid:
                fail(f"{node}.{leaf} is not a key of {node}; accepted: {', '.join(valid)}")


def _refuse_loose_bools(parsed: Sequence[Any]) -> None:
    """``compact=5``, ``skip_completed=yes``: OmegaConf reads any int but 0, and words such as
    yes and on, as true; a true-or-false key of the schema takes true or false only."""
    from hydra.core.override_parser.types import ChoiceSweep

    from sweep import config

    for o in parsed:
        if o.is_hydra_override() or o.is_delete() or not config.is_bool(o.key_or_group):
            continue
        raw = o.value()
        if o.is_sweep_override() and not isinstance(raw, ChoiceSweep):
            fail(f"{o.input_line}: {o.key_or_group} is true or false; accepted: {_BOOL_SWEEP}")
        for value in raw.list if isinstance(raw, ChoiceSweep) else [raw]:
            refusal = _loose_bool(o.key_or_group, value)
            if refusal:
                fail(refusal)


_BOOL_SWEEP = "true, false, or a sweep of both (-m KEY=true,false)"


def _loose_bool(key: str, value: Any) -> str | None:
    """Why ``value`` of the true-or-false key ``key`` is refused; ``None`` for true, false and
    null (left to the schema, which refuses it where the key takes no null)."""
    if value is None or isinstance(value, bool):
        return None
    quoted = isinstance(value, str) and value.lower() in ("true", "false")
    return (
        f"{key}={value!r} is not valid{' (quoted, it is text)' if quoted else ''}; "
        "accepted: true or false"
    )


def _check_output_dir(cfg: DictConfig, multirun: bool) -> None:
    """``hydra.run.dir`` (``hydra.sweep.dir`` in a multirun) can be created: Hydra creates it
    before the first job and fails with a traceback where it cannot. Creates nothing: the
    nearest folder that exists must be one where a folder can be made. A value that cannot be
    resolved here (``${hydra:...}``) is checked on its part before the first interpolation,
    and not at all if that is empty. ``~`` is not expanded: Hydra does not expand it either."""
    import tempfile

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    node = OmegaConf.select(cfg, key.rpartition(".")[0])
    raw = OmegaConf.to_container(node, resolve=False).get("dir") if node is not None else None
    if not isinstance(raw, str):
        return
    try:
        path = Path(str(OmegaConf.select(cfg, key)))
    except OmegaConfBaseException:
        literal = raw.split("${", 1)[0]
        if not literal:
            return
        path = Path(literal) if literal.endswith("/") else Path(literal).parent
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        fail(f"{key}={raw!r} is inside a file ({str(existing)!r}); accepted: a folder path")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".probe."))
    except OSError as e:
        fail(
            f"{key}={raw!r} cannot be created in {str(existing)!r} ({e.strerror}); accepted: "
            "a folder path where you can write"
        )


def _refuse_added_top_level_keys(parsed: Sequence[Any], cfg: DictConfig) -> None:
    """``+foo=1``, ``+foo={a: 1}``, ``+foo=null``: a value no part of a trial reads.
    ``+group=option`` (a config group of yours, ``# @package _global_``) merges its keys into
    the config and passes."""
    from hydra.core.override_parser.types import Glob

    from sweep import config

    top = config.keys("") or []
    for o in parsed:
        key = o.key_or_group
        if not (o.is_add() or o.is_force_add()) or o.is_hydra_override() or "." in key:
            continue
        if key in top:
            continue
        raw = o.value()
        if isinstance(raw, Glob):  # glob(*): names of the group's options
            continue
        given = raw.list if o.is_choice_sweep() else [raw]
        value = cfg.get(key)
        # A group's option is a name: a mapping or null given here is a value, as 1 is.
        if any(not isinstance(v, str) for v in given) or (
            value is not None and not isinstance(value, DictConfig)
        ):
            fail(f"{key} is not a key in the config; accepted: {', '.join(top)}")


def _refuse_a_sweep_under_torchrun() -> None:
    """Each rank torchrun starts would run a sweep of its own, waiting on the others' trials."""
    from sweep import distributed

    env = distributed.launched()
    if env is not None and not distributed.spawned():
        fail(
            f"python -m sweep -m under torchrun ({env.world_size} processes): every rank would "
            "run a sweep of its own; accepted: python -m sweep -m ... distributed.nproc="
            f"{env.world_size} (each trial starts its ranks), or torchrun ... -m sweep for one "
            "trial"
        )


def summary(row: Mapping[str, Any], also: Sequence[str] = ()) -> str:
    """One line: method, amount, sparsity, accuracy dense -> pruned [-> recalibrated] ->
    finetuned, time, and the trial key (``sweep.load_model(key)`` gives its model back);
    ``also``: settings to name after the amount (a grid's other swept values)."""
    amount = row["amount"]
    head = (
        f"{row['method']} amount={amount:.4g}"
        if isinstance(amount, float)
        else (f"{row['method']} amount={amount}")
    )
    head += _per_layer(row)
    # what else tells trials of one method and amount apart, where it is not the default
    if row.get("method.importance") not in (None, "magnitude"):
        head += f", importance={row['method.importance']}"
    if row.get("schedule") not in (None, "one_shot"):
        head += f", schedule={row['schedule']}"
    if row.get("rewind") not in (None, "none"):
        head += f", rewind={row['rewind']}"
    head += "".join(f", {setting}" for setting in also)
    if row["status"] == "failed":
        return f"{head}: FAILED: {row['error']} ({row['time_total_s']:.1f} s)"
    stages = ["dense", "pruned", "recalibrated", "finetuned"]
    if not row.get("recalibrated"):
        stages.remove("recalibrated")
    shown = [s for s in stages if row.get(f"acc_{s}") is not None]
    acc = " -> ".join(f"{row[f'acc_{s}']:.3f}" for s in shown)
    return (
        f"{head}: {row['status']}, sparsity {row['sparsity']:.3f}, "
        f"accuracy {' -> '.join(shown)} {acc}{_speedup(row)}, {row['time_total_s']:.1f} s "
        f"[trial {row['trial_key']}: {row.get('store_file', 'not stored')}]"
    )


def _speedup(row: Mapping[str, Any]) -> str:
    """``, speedup 1.93 [1.88, 1.97]`` where the trial measured latency, ``noisy`` after it
    where its interval stayed wider than ``latency.width`` (a row stored before intervals
    were: the speedup alone)."""

    def number(key: str) -> float | None:
        value = row.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
        return value if ok else None

    speedup, low, high = number("speedup"), number("speedup_low"), number("speedup_high")
    if speedup is None:
        return ""
    text = f", speedup {speedup:.3g}"
    if low is not None and high is not None:
        text += f" [{low:.3g}, {high:.3g}]"
    noisy = row.get("latency_noisy")
    noisy = noisy.item() if hasattr(noisy, "item") else noisy  # numpy's bool, read back
    return text + " noisy" if noisy is True else text


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


def _parse_args(argv: Sequence[str]) -> Any:
    """The command line read by Hydra's own parser; an option after the overrides (which that
    parser cannot read: it prints its usage) or one it does not know is refused in one line."""
    from hydra._internal.utils import get_args_parser

    args, extra = get_args_parser().parse_known_args(list(argv))
    unknown = [a for a in extra if a.startswith("-")]
    late = [a for a in extra if not a.startswith("-")]
    if late:
        overrides = [*args.overrides, *late]
        options = list(argv)
        for o in overrides:
            options.remove(o)
        after = [a for a in argv[argv.index(overrides[0]) :] if a.startswith("-")]
        moved = " ".join([*options, *overrides])
        fail(
            f"{' '.join(after)} after the overrides, where Hydra reads no options: put "
            f"{' '.join(after)} before the overrides; accepted: python -m sweep {moved}"
        )
    if unknown:
        fail(
            f"{unknown[0]} is not an option of python -m sweep; accepted: -m/--multirun, "
            "--config-dir/-cd, --config-name/-cn, --config-path/-cp, --cfg, --info, --help "
            "(python -m sweep --help)"
        )
    return args


@contextmanager
def _config_search_path(args: Any) -> Iterator[None]:
    """Compose from where Hydra will look: ``--config-path`` (else the package's configs) and
    ``--config-dir`` before them, as `hydra.main` builds its search path."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    primary = f"pkg://{CONFIG_MODULE}"
    if args.config_path is not None:
        primary = args.config_path
        if not primary.startswith("pkg://"):
            # relative to the file declaring @hydra.main, as Hydra reads it
            primary = os.path.join(os.path.dirname(__file__), primary)
            if not os.path.isdir(primary):
                fail(
                    f"--config-path={args.config_path!r} is not a folder ({primary}); "
                    "accepted: a folder of configs, absolute, relative to the sweep package "
                    "or pkg://module"
                )
    search_path = create_config_search_path(primary)
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            fail(
                f"--config-dir={args.config_dir!r} is not a folder ({config_dir}); "
                "accepted: an existing folder of config files (its groups add to the package's)"
            )
        search_path.prepend(
            provider="command-line",
            path=f"file://{config_dir}",
            anchor=SearchPathQuery(provider="schema"),
        )
    global_hydra = GlobalHydra.instance()
    if global_hydra.is_initialized():
        global_hydra.clear()
    Hydra.create_main_hydra2(task_name="sweep", config_search_path=search_path)
    try:
        yield
    finally:
        global_hydra.clear()


def _missing_primary(args: Any, config_name: str) -> str:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()
    names = loader.get_group_options("", results_filter=ObjectType.CONFIG)
    names = [n for n in names if not n.startswith("_") and n != "base_config"]
    return f"--config-name={config_name!r} is not a config found; accepted: {', '.join(names)}"


def _yaml_error(e: yaml.YAMLError) -> str:
    """Where a config file stops being YAML, and what went wrong there, in one line."""
    mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a file"
    what = " ".join(str(p) for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p)
    return (
        f"{where} is not valid YAML ({what or e}); accepted: YAML such as key: value, "
        "lists as [a, b]"
    )


def _override_syntax(e: Exception, overrides: Sequence[str]) -> str:
    """An override Hydra's grammar cannot read, named whole (Hydra's message names none, or
    cuts it at its first space); a plain value outside the grammar reads once quoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for line in overrides:  # the first that fails alone, and why
        try:
            parser.parse_overrides([line])
        except HydraException as alone:
            e = alone
            break
    else:
        return _first_line(e).partition(" See https://")[0]
    message = str(e).partition("\nSee https://")[0]
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Error parsing override"):
        lines = lines[1:]
    reason = " ".join(lines).rpartition("': ")[2] if "while evaluating" in message else ""
    reason = reason or (lines[0] if lines else type(e).__name__)
    key, eq, value = line.partition("=")
    quoted = value.startswith(("'", '"'))
    if eq and not quoted and "LexerNoViableAlt" in reason:  # a character outside the grammar
        return (
            f"{line} is not an override Hydra can read unquoted; accepted: the value in quotes "
            f"(on a shell command line: {key}='\"{value}\"')"
        )
    if "LexerNoViableAlt" in reason:
        reason = "a quote is not closed" if quoted else "a character outside Hydra's grammar"
    return f"{line} cannot be read ({reason}); accepted: {_SWEEP_SYNTAX}"


def _refuse_amounts_of_a_method_without_one(
    parsed: list, methods: Sequence[Any], searched: Sequence[str]
) -> None:
    """Refuse a sweep over ``amount`` whose every method is one of the user's whose
    constructor takes no amount (N:M and ``none`` resolve their amount, so that their repeats
    are one trial key): each amount would run the same trial under another key."""
    if not methods or not all(m.cls and not m.takes_amount and not m.nm for m in methods):
        return
    method = methods[0]
    what = f"method {method.name} ({method.cls.__qualname__}) takes no amount: it prunes alike"
    instead = "or a method whose constructor takes amount, such as method=l1_unstructured"
    if searched:  # an Optuna study: the command line's sweeps joined its parameters
        if "amount" in searched and not any(p.split(".")[0] == "method" for p in searched):
            fail(
                f"{what} at every amount, so an Optuna search over amount "
                f"(hydra.sweeper.params.amount) runs one trial again and again; accepted: "
                f"~hydra.sweeper.params.amount to search the other settings, {instead}"
            )
        return
    for o in parsed:
        if o.key_or_group != "amount" or not (o.is_choice_sweep() or o.is_range_sweep()):
            continue
        values = set(o.sweep_string_iterator())
        if len(values) > 1:
            fail(
                f"{what} at every amount, so {o.input_line} runs one trial {len(values)} "
                f"times; accepted: one amount (sweep another key, such as seed=0,1,2), {instead}"
            )


def _variants(parsed: list, fixed: list[str]) -> list[list[str]]:
    """The combinations of overrides the sweep will run that are worth composing: every
    swept value once, the other swept keys at their first value (the whole product of a large
    grid would take as long to check as to start). Call within `_config_search_path`: a
    ``glob(*)`` lists the group's options from there."""
    from hydra.core.global_hydra import GlobalHydra

    for o in parsed:
        o.config_loader = GlobalHydra.instance().config_loader()
    swept = {}
    for o in parsed:
        if "/" in o.key_or_group or not (o.is_choice_sweep() or o.is_range_sweep()):
            continue
        try:
            swept[o.get_key_element()] = list(o.sweep_string_iterator())
        except ValueError as e:  # range(0,1,0)
            fail(
                f"{o.input_line} cannot be swept ({e}); accepted: range(start, stop, step) "
                "with a step that is not zero, such as range(0.1,0.5,0.1)"
            )
    for o in parsed:
        if o.get_key_element() in swept and not swept[o.get_key_element()]:
            fail(
                f"{o.input_line} sweeps no values; accepted: a sweep of at least one value "
                "(range(start, stop, step) counts from start towards stop, stop excluded: "
                "range(0.1,0.5,0.1))"
            )
    first = {key: values[0] for key, values in swept.items() if values}
    variants = [[*fixed, *(f"{k}={v}" for k, v in first.items())]]
    for key, values in swept.items():
        for value in values[1:]:
            variant = {**first, key: value}
            variants.append([*fixed, *(f"{k}={v}" for k, v in variant.items())])
    return variants


def _space_corners(space: Any) -> list[dict[str, Any]]:
    """The values of an Optuna search space worth checking before its study exists: each
    choice of each categorical parameter, and the numeric ones all at their lowest, then all
    at their highest reachable value; a conditional parameter (``when``) alone, with the
    values it waits for."""

    def waits_for(p: Any) -> dict[str, Any]:
        return {key: allowed[0] for key, allowed in p.when.items()}

    def highest(p: Any) -> Any:
        if p.step is None:
            return p.high
        return p.grid()[-1]  # low + k * step, the last one within high

    corners = [
        {**waits_for(p), p.name: c}
        for p in space.params
        if p.choices is not None
        for c in p.choices
    ]
    numeric = [p for p in space.params if p.choices is None]
    for end in (lambda p: p.low, highest):
        together = {p.name: end(p) for p in numeric if not p.when}
        corners += [together] if together else []
        corners += [{**waits_for(p), p.name: end(p)} for p in numeric if p.when]
    return corners


def _composer(config_name: str, hydra_overrides: list[str]) -> Callable[[list[str]], DictConfig]:
    """``compose(config_name, overrides, return_hydra_config=True)``, composed once per set of
    group choices (`sweep._compose`): the points of a grid mostly differ in values only."""
    from hydra.core.global_hydra import GlobalHydra

    from sweep._compose import Composer

    def whole(overrides: list[str]) -> DictConfig:
        return compose(config_name, overrides=overrides, return_hydra_config=True)

    loader = GlobalHydra.instance().config_loader()
    return Composer.create(loader, config_name, hydra_overrides, whole) or whole


def _override_key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _override_value(overrides: Sequence[str], group: str) -> str | None:
    """The value the last override of ``group`` gives it (the one Hydra keeps)."""
    for o in reversed(overrides):
        if _override_key(o) == group:
            return o.partition("=")[2]
    return None


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
    if value is None:  # a key inside the value of an override: params={amount: {...}}
        given = next(
            (o for o in overrides if full_key.startswith(f"{_override_key(o)}.")),
            full_key,
        )
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        space = "hydra.sweeper.params."
        deeper = next((o for o in overrides if _override_key(o).startswith(f"{full_key}.")), None)
        if deeper is not None and full_key.startswith(space):
            from sweep.search._space import _DOTTED

            param = _override_key(deeper).removeprefix(space)
            return f"{deeper}: {_DOTTED.format(param=param)}"
        if full_key.startswith(space) and "." in full_key.removeprefix(space):
            param = full_key.removeprefix(space).rpartition(".")[0]
            return (
                f"{given}: {full_key} is not valid ({reason}): a mapping merges into the "
                f"preset's {param} rather than replacing it; accepted: {param}=choice(a,b) or "
                f"{param}=interval(low,high) on the command line, which replace it"
            )
        return f"{given}: {full_key} is not valid ({reason})"
    if isinstance(cause, ConfigAttributeError):
        node, _, _ = full_key.rpartition(".")
        valid = config.keys(node) or _present_keys(overrides, full_key, node)
        where = f"of {node}" if node else "in the config"
        line = f"{full_key} is not a key {where}; accepted: {', '.join(valid) or 'none'}"
        if node == "hydra.sweeper" and "n_trials" not in valid:
            line += " (the keys of an Optuna search, n_trials, storage..., need -m search=NAME)"
        return line
    accepted = config.accepted(full_key) or _declared(cause) or "a value of the declared type"
    shown = value if value == "null" else repr(value)
    return f"{full_key}={shown} is not valid; accepted: {accepted}"


def _declared(cause: BaseException) -> str | None:
    """What a typed node outside the schema (Hydra's ``hydra.job.chdir``) accepts."""
    import dataclasses
    import types
    import typing

    from sweep import config

    owner = getattr(cause, "object_type", None)
    if not dataclasses.is_dataclass(owner):
        return None
    try:
        kind = typing.get_type_hints(owner).get(getattr(cause, "key", None))
    except (NameError, TypeError):
        return None
    if kind is None:
        return None
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = args[0] if len(args) == 1 else kind
    described = config.describe(kind)
    return described if described != str(kind) else None


def _present_keys(overrides: Sequence[str], bad_key: str, node: str) -> list[str]:
    # an open node (model, dataset, method): the keys its chosen option has
    rest = [o for o in overrides if _override_key(o) != bad_key]
    cfg = compose("config", overrides=rest, return_hydra_config=node.startswith("hydra"))
    found = OmegaConf.select(cfg, node)
    return sorted(str(k) for k in found) if isinstance(found, DictConfig) else []


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__
