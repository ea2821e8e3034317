"""``python -m sweep.report``: plots and a Markdown summary of a results store.

python -m sweep.report                               # reads results/, writes report/
python -m sweep.report --store results --out report/ --tolerance 0.01

summary.md has one section per model and dataset, each with its own plots: a store of one model
on one dataset gets ``tradeoff.png``, ``tradeoff_compression.png``, ``pruned.png``,
``recalibrated.png`` (where BatchNorm was recalibrated), ``pareto.png`` and ``layers.png``; a
store of several gets those names with the pair appended, ``tradeoff-<model>-<dataset>.png``
(in model and dataset, characters other than letters, digits, ``.``, ``_`` and ``+`` become
``_``). A curve or table row is one setting: a method
with every config value that differs between trials (`sweep.analysis.varying`), averaged over
seeds only; method ``none`` (dense, finetuned) is drawn as a reference level. Rows of a layer
sensitivity analysis (``python -m sweep.sensitivity``, tag ``sensitivity``) are no trade-off
trials: left out, and counted in the summary's first line.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweep import analysis
from sweep.errors import ConfigError, fail
from sweep.store import check_writable, load_layers, load_results

PARETO = {"acc_finetuned": "max", "sparsity": "max"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.report", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument(
        "--store", default="results", help="results store folder (default: results)"
    )
    parser.add_argument("--out", default="report", help="output folder (default: report)")
    parser.add_argument(
        "--tolerance",
        default="0.01",
        help="accuracy drop from dense still counted as kept, in [0, 1] (default: 0.01)",
    )
    args = parser.parse_args(argv)
    try:
        tolerance = analysis.check_tolerance(args.tolerance, "--tolerance")
    except ConfigError as e:
        fail(str(e))
    out = Path(args.out).expanduser()  # --out=~/report: no shell expands ~ after =
    if out.exists() and not out.is_dir():
        fail(f"--out={args.out!r} is a file; accepted: a folder (created if missing)")
    # load_layers reads the trial files' keys again: a damaged one is named once, not twice
    store_log = logging.getLogger(load_results.__module__)
    once = _Once()
    store_log.addFilter(once)
    try:
        df, layers = _read(args.store)
    finally:
        store_log.removeFilter(once)
    try:
        # a folder that cannot be made or written is input (exit 2), checked before any file
        check_writable(args.out, name="--out", folders=())
    except ConfigError as e:
        fail(str(e))
    try:
        written = write_report(df, layers, out, tolerance, args.store)
    except OSError as e:  # a full disk, a file in the folder that cannot be replaced
        fail(f"cannot write {e.filename or out}: {e.strerror or e}", code=1)
    print(f"wrote {', '.join(p.name for p in written)} to {out}/")


def _read(store: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's rows and layers; a missing store or one with no complete trial exits."""
    try:
        df = load_results(store)
    except FileNotFoundError as e:
        fail(str(e))
    trials = analysis.ordinary(df)
    if not (trials["status"] == "complete").any():
        others = len(df) - len(trials)
        sensitivity = f" (and {others} row(s) of python -m sweep.sensitivity)" if others else ""
        fail(
            f"the results store at {store!r} has {len(trials)} trial(s){sensitivity} and "
            "none complete; run python -m sweep first"
        )
    return df, load_layers(store)


class _Once(logging.Filter):
    """Passes each distinct message once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        new = message not in self.seen
        self.seen.add(message)
        return new


def write_report(
    df: pd.DataFrame, layers: pd.DataFrame, out: Path, tolerance: float, store: str = "results"
) -> list[Path]:
    """Save the report's PNGs and ``summary.md`` under ``out``; return the files written.

    Args:
        df: `sweep.load_results` of the store, with at least one complete trial that is not
            of a sensitivity analysis (`sweep.analysis.ordinary`; those rows are left out).
        layers: `sweep.load_layers` of the store.
        out: The report folder (created).
        tolerance: Accuracy drop from dense still counted as kept.
        store: The store's path, as the summary names it.

    Returns:
        ``summary.md`` first, then the PNGs in the order the summary shows them.

    Example:
        >>> write_report(load_results(), load_layers(), Path("report"), 0.01)  # doctest: +SKIP
        [PosixPath('report/summary.md'), PosixPath('report/tradeoff.png'), ...]
    """
    out.mkdir(parents=True, exist_ok=True)
    parts = analysis.subjects(analysis.ordinary(df))
    images: dict[tuple, list[str]] = {}
    for subject, part in parts.items():
        suffix = "".join(f"-{_slug(v)}" for v in subject) if len(parts) > 1 else ""
        images[subject] = []
        for stem, fig in _figures(part, layers[layers["trial_key"].isin(part["trial_key"])]):
            fig.savefig(out / f"{stem}{suffix}.png", dpi=120)
            images[subject].append(f"{stem}{suffix}.png")
    (out / "summary.md").write_text(summary(df, tolerance, store, images))
    return [out / "summary.md", *(out / name for names in images.values() for name in names)]


def summary(
    df: pd.DataFrame, tolerance: float, store: str, images: Mapping[tuple, Sequence[str]]
) -> str:
    """The Markdown of ``summary.md``: the store's counts, then one section per subject.

    Args:
        df: `sweep.load_results` of the store; rows of a sensitivity analysis are counted in
            the first line and left out of the rest.
        tolerance: Accuracy drop from dense still counted as kept.
        store: The store's path, as the summary names it.
        images: (model, dataset) -> the PNG names of its section, as `analysis.subjects` keys.

    Returns:
        The text.

    Example:
        >>> print(summary(load_results(), 0.01, "results", {}))  # doctest: +SKIP
    """
    trials = analysis.ordinary(df)
    parts = analysis.subjects(trials)
    pairs = ", ".join(_subject(s) for s in parts)
    if len(parts) > 1:
        pairs = f"{len(parts)} model and dataset pairs, one section each: {pairs}"
    left_out = len(df) - len(trials)
    sensitivity = (
        f" ({left_out} row(s) of a layer sensitivity analysis left out: "
        "python -m sweep.sensitivity)"
        if left_out
        else ""
    )
    lines = [
        "# prune-sweep report",
        "",
        f"Store `{store}`: {_statuses(trials)}{sensitivity}" + (f"; {pairs}." if pairs else "."),
        "",
    ]
    for subject, part in parts.items():
        lines += _section(part, subject, tolerance, images.get(subject, ()))
    return "\n".join(lines)


def _figures(df: pd.DataFrame, layers: pd.DataFrame) -> list[tuple[str, Figure]]:
    done = analysis.complete(df)
    if done["method"].isin(["none"]).all():  # no curve, no front: nothing was pruned
        return []
    figures = [
        ("tradeoff", analysis.tradeoff(df)),
        ("tradeoff_compression", analysis.tradeoff(df, compression=True)),
        ("pruned", analysis.tradeoff(df, "acc_pruned")),
    ]
    if done.get("recalibrated", pd.Series(dtype=object)).eq(True).any():
        figures.append(("recalibrated", analysis.tradeoff(df, "acc_recalibrated")))
    figures.append(
        ("pareto", analysis.plot_pareto(df, {"sparsity": "max", "acc_finetuned": "max"}))
    )
    if len(layers):
        figures.append(("layers", analysis.plot_layer_sparsity(layers, df)))
    return figures


def _section(
    df: pd.DataFrame, subject: tuple, tolerance: float, images: Sequence[str]
) -> list[str]:
    """One subject's lines: counts, highest sparsity within tolerance, Pareto table, plots."""
    done = analysis.complete(df)
    keys = ["method", *analysis.varying(df)]
    done["setting"] = analysis.setting_labels(done, keys)
    kept = analysis.highest_sparsity_within(df, tolerance, by=keys)
    kept["setting"] = analysis.setting_labels(kept, keys)
    # signed, as the accuracy moved: finetuning can beat an undertrained dense model
    kept["vs_dense"] = kept["acc_finetuned"] - kept["acc_dense"]
    front = analysis.pareto_front(done, PARETO).sort_values("sparsity")
    name = "method" if len(keys) == 1 else "setting"
    none = done["method"].isin(["none"]).any()
    head = [
        *([f"## {_subject(subject)}", ""] if subject else []),
        f"{_statuses(df)}; {_settings(done, keys)}; {_dense(df, done, keys)}.",
        "",
    ]
    if done["method"].isin(["none"]).all():
        return [
            *head,
            "Nothing pruned yet: every complete trial is method none (dense, finetuned), the "
            "reference the curves are drawn against, so there is no trade-off to show. Sweep "
            "a method over amounts, e.g. `python -m sweep -m amount=0.25,0.5,0.75`.",
            "",
        ]
    return [
        *head,
        f"### Highest sparsity within {tolerance:.1%} of dense accuracy",
        "",
        "Mean over the seeds of each setting; accuracy vs dense: its accuracy minus dense "
        "accuracy, in percentage points (negative: a drop); -: no amount stayed within the "
        "tolerance."
        + (" Method none (dense, finetuned) is the reference, not a choice." if none else ""),
        "",
        markdown_table(
            kept,
            {
                "setting": name,
                "amount": "amount",
                "sparsity": "sparsity",
                "compression": "compression",
                "acc_finetuned": "accuracy",
                "vs_dense": "accuracy vs dense",
                "n": "seeds",
            },
        ),
        "",
        "### Pareto front (maximize acc_finetuned, maximize sparsity): "
        f"{len(front)} of {len(done)} trials",
        "",
        markdown_table(
            front,
            {
                "setting": name,
                "amount": "amount",
                "seed": "seed",
                "sparsity": "sparsity",
                "acc_finetuned": "accuracy",
                "trial_key": "trial key",
            },
        ),
        "",
        "### Plots",
        "",
        *[f"![{name.removesuffix('.png')}]({name})\n" for name in images],
    ]


def _statuses(df: pd.DataFrame) -> str:
    counts = df["status"].value_counts()
    return f"{len(df)} trial(s) ({', '.join(f'{n} {s}' for s, n in counts.items())})"


def _settings(done: pd.DataFrame, keys: Sequence[str]) -> str:
    """'6 setting(s) (method x amount); seeds per setting: 2': what a point of a curve is."""
    grouping = list(dict.fromkeys([keys[0], "amount", *keys[1:]]))
    seeds = done.groupby(grouping, dropna=False)["seed"].nunique(dropna=False)
    lo, hi = int(seeds.min()), int(seeds.max())
    per = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return f"{len(seeds)} setting(s) ({' x '.join(grouping)}); seeds per setting: {per}"


def _dense(df: pd.DataFrame, done: pd.DataFrame, keys: Sequence[str]) -> str:
    """'dense test accuracy 99.00%', per baseline when several, then each ``none`` setting
    (``done`` holds the complete rows of ``df`` with their ``setting`` label)."""
    levels = analysis.dense_levels(df, keys)
    parts = [
        analysis.setting_label({"level": f"{level:.2%}", **k}, ["level", *k]) for k, level in levels
    ]
    none = done[done["method"].isin(["none"])]
    text = f"dense test accuracy {', '.join(parts)}"
    return text + "".join(
        f"; {label}: {part['acc_finetuned'].mean():.2%}"
        for label, part in none.groupby("setting", sort=True)
    )


def _subject(subject: tuple) -> str:
    return " on ".join(map(str, subject))


def _slug(value: object) -> str:
    # no "-" inside a part: it separates model from dataset in the file name
    return re.sub(r"[^A-Za-z0-9._+]+", "_", str(value))


def markdown_table(df: pd.DataFrame, columns: dict[str, str]) -> str:
    """A GitHub Markdown table of ``columns`` (name -> header); fractions as percentages,
    ``vs_dense`` as signed percentage points."""
    percent = {"sparsity", "acc_finetuned", "drop", "acc_dense"}
    rows = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for _, r in df.iterrows():
        cells = []
        for c in columns:
            v = r[c]
            if v is None or (np.ndim(v) == 0 and pd.isna(v)):
                cells.append("-")
            elif c in percent:
                cells.append(f"{v:.2%}")
            elif c == "vs_dense":
                cells.append(f"{v * 100:+.2f} pts")
            elif c == "compression":
                cells.append(f"{v:.1f}x")
            elif isinstance(v, float):
                cells.append(f"{v:g}")
            else:
                cells.append(str(v))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
