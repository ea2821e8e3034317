#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, into .whl/ at the repository's root, for the device
# tool's `carry` (see check.sh). Run here, where PyPI is reachable, from any folder:
#
#     experiments/device/wheels.sh            # PYTHON=... to read the pins from another venv
#
# The machine's image has python 3.12 with torch, torchvision, numpy, pandas, pyarrow,
# scikit-learn, tqdm, matplotlib, PyYAML, MarkupSafe and pytest; it lacks Hydra, OmegaConf,
# Optuna and what Optuna's storages need, and Torch-Pruning. Each is pinned to the version this
# checkout's venv tested. antlr4-python3-runtime 4.9.3 (OmegaConf's parser) has no wheel on
# PyPI: pip builds one here, and one of prune-sweep from this tree.
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
python=${PYTHON:-$root/.venv/bin/python}
pins=$("$python" -m pip list --format=freeze | grep -iE \
    '^(optuna|hydra-core|omegaconf|alembic|sqlalchemy|mako|colorlog|torch-pruning|greenlet)==')
if [ "$(echo "$pins" | wc -l)" -lt 8 ]; then
    echo "error: $python lacks some of the packages to pin; found: $pins" >&2
    exit 2
fi
rm -rf .whl && mkdir .whl
# greenlet (SQLAlchemy's, compiled) for the machine's CPython 3.12 on x86-64
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $pins \
    "$(grep -qi '^greenlet==' <<<"$pins" || echo 'greenlet>=1')"
"$python" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 .
rm -rf build  # setuptools' staging of the prune-sweep wheel
ls -1 .whl
du -sh .whl
