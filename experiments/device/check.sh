#!/usr/bin/env bash
# Issue 23's GPU checks and figures in one device call of about 8 minutes, each step bounded:
# install the carried wheels, name the GPU, run the fused and trial tests on it (`device=auto`
# picks CUDA there), then `gpu_sweep.py`, `nm_latency.py` and `compaction.py --device cuda`.
# Each step's output lands in $OUT/<step>.txt, and a step cut at its limit still leaves what it
# printed (the benchmarks print a line per row as it finishes).
#
# Here first: experiments/device/wheels.sh  (fills .whl/, about 7 MB), then one device call:
#     run(command="experiments/device/check.sh", carry=[".whl"], timeout_s=560)
#
# SMOKE=1 runs every step small on whatever machine there is (about 3 minutes on 2 CPU
# cores): it checks this script; its figures mean nothing.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
smoke=${SMOKE:-0}

step() {  # NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, its output kept
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name (at most $limit s): $*"
    timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$out/$name.txt"
}

if [ -d .whl ] && [ "$smoke" != 1 ]; then
    # --no-deps: the image's torch stays; not --target (the tests' subprocesses set PYTHONPATH)
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        .whl/*.whl 2>&1 | grep -v "^WARNING" || true
fi
"$py" - <<'PY' 2>&1 | tee "$out/gpu.txt" || exit 1
import hydra, optuna, torch, torch_pruning, torchvision, sweep
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"{gpu}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"optuna {optuna.__version__}, hydra {hydra.__version__}, prune-sweep {sweep.__version__}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    >>"$out/gpu.txt" 2>&1 || true

if [ "$smoke" = 1 ]; then
    step tests 300 "$py" -m pytest -q -x -p no:cacheprovider tests/test_fused.py -k "gives_what_its_trials_give_alone or trains_each_member"
    step gpu_sweep 240 "$py" experiments/benchmarks/gpu_sweep.py --smoke --rows hand alone fused
    step nm_latency 60 "$py" experiments/benchmarks/nm_latency.py --batches 1
    step compaction 120 "$py" experiments/benchmarks/compaction.py --device cpu --amounts 0.5 \
        --batches 1
else
    step tests 90 "$py" -m pytest -q -x -p no:cacheprovider tests/test_fused.py tests/test_trial.py
    step gpu_sweep 270 "$py" experiments/benchmarks/gpu_sweep.py --k 4 8 16 --per-gpu 1 2
    step nm_latency 40 "$py" experiments/benchmarks/nm_latency.py
    step compaction 40 "$py" experiments/benchmarks/compaction.py --device cuda
fi
