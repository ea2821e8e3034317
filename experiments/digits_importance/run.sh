#!/usr/bin/env bash
# Importance criteria as a search dimension: magnitude vs Taylor vs Wanda (and APoZ for channels)
# for layer-wise L1, global, Ln-structured and 2:4 N:M pruning, 3 seeds, on the embedded default
# (digits, small_cnn, the default 20 finetune epochs and 10 calibration batches), CPU.
# 69 trials, 3 pretrainings; about 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
common=(seed=0,1,2 device=cpu progress=false store.path=experiments/digits_importance/results)
python -m sweep -m method=l1_unstructured,global_unstructured \
    method.importance=magnitude,taylor,wanda amount=0.9,0.95 "${common[@]}"
python -m sweep -m method=ln_structured \
    method.importance=magnitude,taylor,apoz,wanda amount=0.5,0.7 "${common[@]}"
python -m sweep -m method=nm method.importance=magnitude,taylor,wanda "${common[@]}"
python experiments/digits_importance/analyse.py
