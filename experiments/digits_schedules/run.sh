#!/usr/bin/env bash
# Schedules as a search dimension: one-shot vs iterative vs AGP vs lottery-ticket rewinding,
# layer-wise L1 and global magnitude pruning, 4 amounts, 3 seeds, on the embedded default (digits,
# small_cnn, the default 20 finetune epochs), CPU. 120 trials, 3 pretrainings; about 7 minutes on
# 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
common=(
    method=l1_unstructured,global_unstructured amount=0.8,0.9,0.95,0.98 seed=0,1,2
    device=cpu progress=false store.path=experiments/digits_schedules/results
)
python -m sweep -m schedule=one_shot,iterative,agp "${common[@]}"
python -m sweep -m schedule=one_shot rewind=init "${common[@]}"
python -m sweep -m schedule=iterative rewind=epoch:1 "${common[@]}"
python experiments/digits_schedules/analyse.py
