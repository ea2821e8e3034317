#!/usr/bin/env bash
# How the defaults were chosen, on the reference experiment's baselines (3 seeds):
#  1. the finetune budget: L1, global and random pruning at 0.9 and 0.95, finetuned for
#     3 / 10 / 20 / 40 epochs at a constant or a cosine learning rate (144 trials);
#  2. which layers stay dense: L1 and random pruning at 0.9 with every layer pruned, the first
#     convolution dense, the classifier dense, or both (24 trials).
# Prints accuracy after finetuning, mean ± std over seeds. About 8 minutes on 2 cores. The store
# goes to $1 (default /tmp/digits_defaults), not into git; a rerun skips the trials it holds.
set -euo pipefail
cd "$(dirname "$0")/../.."
store=${1:-/tmp/digits_defaults}
common=(seed=0,1,2 device=cpu progress=false skip_completed=true store.path="$store")
python -m sweep -m method=l1_unstructured,global_unstructured,random_unstructured amount=0.9,0.95 \
    finetune.epochs=3,10,20,40 finetune.scheduler=constant,cosine "${common[@]}" >/dev/null
python -m sweep -m method=l1_unstructured,random_unstructured amount=0.9 scope.dense_ends=false \
    'scope.exclude=[],[block1.conv],[classifier],[block1.conv,classifier]' "${common[@]}" >/dev/null
python - "$store" <<'PY'
import sys

import sweep


def table(rows, by, columns):
    cells = rows.groupby([*by, columns])["acc_finetuned"]
    cells = cells.agg(lambda a: f"{a.mean():.1%} ± {a.std():.1%}").unstack(columns)
    print("| " + " | ".join(by) + " | " + " | ".join(map(str, cells.columns)) + " |")
    print("|---" * (len(by) + len(cells.columns)) + "|")
    for index, row in cells.iterrows():
        index = index if isinstance(index, tuple) else (index,)
        print("| " + " | ".join(map(str, index)) + " | " + " | ".join(row) + " |")
    print()


df = sweep.load_results(sys.argv[1])
ends = df["scope.dense_ends"].eq(False)
print("Finetune epochs (columns):\n")
table(df[~ends], ["method", "amount", "finetune.scheduler"], "finetune.epochs")
print("Layers left dense at amount 0.9 (columns: scope.exclude, every other layer pruned):\n")
table(df[ends], ["method"], "scope.exclude")
PY
