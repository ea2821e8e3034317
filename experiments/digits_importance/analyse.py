"""Tables and plots of the importance experiment: python experiments/digits_importance/analyse.py"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import sweep
from sweep import analysis

HERE = Path(__file__).parent
CRITERIA = ("magnitude", "taylor", "apoz", "wanda")


def _cell(values: pd.Series) -> str:
    if values.empty:
        return "-"
    return f"{values.mean():.1%} ± {values.std():.1%}"


def main() -> None:
    df = analysis.complete(sweep.load_results(HERE / "results"))
    lines = [
        "# Importance criteria on digits / small_cnn, mean ± std over 3 seeds",
        "",
        "Each cell: accuracy right after pruning and BatchNorm recalibration (no weight update:",
        "what the criterion chose) / after 20 finetuning epochs. Dense: "
        f"{df['acc_dense'].mean():.1%}.",
        "",
        "| method | amount | " + " | ".join(CRITERIA) + " |",
        "|---|---|" + "---|" * len(CRITERIA),
    ]
    for (method, amount), rows in df.groupby(["method", "amount"]):
        cells = []
        for criterion in CRITERIA:
            at = rows[rows["method.importance"] == criterion]
            if at.empty:
                cells.append("-")
                continue
            cells.append(f"{_cell(at['acc_recalibrated'])} / {_cell(at['acc_finetuned'])}")
        lines.append(f"| {method} | {amount:g} | " + " | ".join(cells) + " |")
    lines.append("")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for method in ("l1_unstructured", "ln_structured"):
        rows = df[df["method"] == method]
        fig = analysis.tradeoff(rows, by=["method.importance"], title=f"{method}: criteria")
        fig.savefig(HERE / f"{method}.png", dpi=120)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
