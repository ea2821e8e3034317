"""``python -m sweep.report``: plots and a Markdown summary of a results store.

python -m sweep.report                               # reads results/, writes report/
python -m sweep.report --store results --out report/ --tolerance 0.01
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sweep import analysis
from sweep.cli import fail
from sweep.store import load_layers, load_results

PARETO = {"acc_finetuned": "max", "sparsity": "max"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--store", default="results", help="results store folder (default: results)"
    )
    parser.add_argument("--out", default="report", help="output folder (default: report)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="accuracy drop from dense still counted as kept (default: 0.01)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        fail(
            f"--tolerance={args.tolerance} is outside [0, 1); "
            "accepted: an accuracy drop such as 0.01"
        )
    try:
        df = load_results(args.store)
    except FileNotFoundError as e:
        fail(str(e))
    if not (df["status"] == "complete").any():
        fail(
            f"the results store at {args.store!r} has {len(df)} trial(s) and none complete; "
            "run python -m sweep first"
        )
    written = write_report(df, load_layers(args.store), Path(args.out), args.tolerance, args.store)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}/")


def write_report(
    df: pd.DataFrame, layers: pd.DataFrame, out: Path, tolerance: float, store: str = "results"
) -> list[Path]:
    """Save the report's PNGs and ``summary.md`` under ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "tradeoff.png": analysis.tradeoff(df),
        "tradeoff_compression.png": analysis.tradeoff(df, compression=True),
        "pruned.png": analysis.tradeoff(df, "acc_pruned"),
        "pareto.png": analysis.plot_pareto(df, {"sparsity": "max", "acc_finetuned": "max"}),
    }
    if len(layers):
        figures["layers.png"] = analysis.plot_layer_sparsity(layers, df)
    written = []
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
        written.append(out / name)
    (out / "summary.md").write_text(summary(df, tolerance, store, list(figures)))
    return [out / "summary.md", *written]


def summary(df: pd.DataFrame, tolerance: float, store: str, images: Sequence[str]) -> str:
    counts = df["status"].value_counts()
    done = df[df["status"] == "complete"]
    kept = analysis.highest_sparsity_within(df, tolerance)
    front = analysis.pareto_front(done, PARETO).sort_values("sparsity")
    subject = ", ".join(
        f"{c} {', '.join(map(str, sorted(done[c].unique())))}" for c in ("model", "dataset")
    )
    lines = [
        "# prune-sweep report",
        "",
        f"Store `{store}`: {len(df)} trial(s) "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}); {subject}; "
        f"{done['seed'].nunique()} seed(s); dense test accuracy {done['acc_dense'].mean():.2%}.",
        "",
        f"## Highest sparsity within {tolerance:.1%} of dense accuracy",
        "",
        "Mean over seeds of each requested amount; -: no amount stayed within the tolerance.",
        "",
        markdown_table(
            kept,
            {
                "method": "method",
                "amount": "amount",
                "sparsity": "sparsity",
                "compression": "compression",
                "acc_finetuned": "accuracy",
                "drop": "drop",
                "n": "seeds",
            },
        ),
        "",
        "## Pareto front (maximize acc_finetuned, maximize sparsity): "
        f"{len(front)} of {len(done)} trials",
        "",
        markdown_table(
            front,
            {
                "method": "method",
                "amount": "amount",
                "seed": "seed",
                "sparsity": "sparsity",
                "acc_finetuned": "accuracy",
                "trial_key": "trial key",
            },
        ),
        "",
        "## Plots",
        "",
        *[f"![{name.removesuffix('.png')}]({name})\n" for name in images],
    ]
    return "\n".join(lines)


def markdown_table(df: pd.DataFrame, columns: dict[str, str]) -> str:
    """A GitHub Markdown table of ``columns`` (name -> header); fractions as percentages."""
    percent = {"sparsity", "acc_finetuned", "drop", "acc_dense"}
    rows = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for _, r in df.iterrows():
        cells = []
        for c in columns:
            v = r[c]
            if isinstance(v, float) and math.isnan(v):
                cells.append("-")
            elif c in percent:
                cells.append(f"{v:.2%}")
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
