"""``python -m sweep``: compose the config, run one trial, print one summary line.

python -m sweep method=ln_structured amount=0.5
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from sweep.cli import check_overrides, fail, summary
from sweep.errors import ConfigError


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    from sweep.trial import run_trial  # torch: imported once the command line is known good

    try:
        row = run_trial(cfg)
    except ConfigError as e:
        fail(str(e))
    print(summary(row))
    if row["status"] == "failed":
        sys.exit(1)
    return row.get("acc_finetuned")


def main() -> None:
    check_overrides(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
