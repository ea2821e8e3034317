"""Tables and plots of the schedules experiment: python experiments/digits_schedules/analyse.py"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import sweep
from sweep import analysis

HERE = Path(__file__).parent
PROTOCOLS = {  # (schedule, rewind) -> how the README names it
    ("one_shot", "none"): "one-shot",
    ("iterative", "none"): "iterative",
    ("agp", "none"): "AGP",
    ("one_shot", "init"): "LTH one-shot, rewind to init",
    ("iterative", "epoch:1"): "LTH iterative, rewind to epoch 1",
}


def main() -> None:
    df = analysis.complete(sweep.load_results(HERE / "results"))
    df["protocol"] = [PROTOCOLS[(s, r)] for s, r in zip(df["schedule"], df["rewind"], strict=True)]
    lines = ["# Schedules on digits: accuracy after finetuning, mean ± std over seeds", ""]
    for amount in (0.8, 0.9, 0.95, 0.98):
        lines += [f"## amount {amount}", "", "| method | " + " | ".join(PROTOCOLS.values()) + " |"]
        lines.append("|---" * (len(PROTOCOLS) + 1) + "|")
        at = df[df["amount"] == amount]
        for method, rows in at.groupby("method"):
            cells = []
            for name in PROTOCOLS.values():
                acc = rows.loc[rows["protocol"] == name, "acc_finetuned"]
                cells.append(f"{acc.mean():.1%} ± {acc.std():.1%} (n={len(acc)})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Cost in finetune time relative to one-shot: `python experiments/benchmarks/schedules.py`",
        "(the sweeps above run one after another, so their times are not a comparison).",
    ]
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for method, rows in df.groupby("method"):
        fig = analysis.tradeoff(
            rows, by=["protocol"], compression=True, title=f"{method}: schedules"
        )
        fig.savefig(HERE / f"{method}.png", dpi=120)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
