#!/usr/bin/env bash
# The reference experiment: 4 methods x 11 amounts x 3 seeds on the embedded default
# (scikit-learn digits, small_cnn), CPU. 132 trials, 3 pretrainings; about 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m sweep -m \
    method=l1_unstructured,random_unstructured,ln_structured,global_unstructured \
    amount=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.98 \
    seed=0,1,2 \
    device=cpu progress=false \
    store.path=experiments/digits_tradeoff/results
python -m sweep.report --store experiments/digits_tradeoff/results --out experiments/digits_tradeoff
