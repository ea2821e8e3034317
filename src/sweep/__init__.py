"""prune-sweep: neural-network pruning as a hyperparameter search dimension.

    python -m sweep method=ln_structured amount=0.5

and in a notebook::

    import sweep
    df = sweep.load_results()          # one row per trial
    layers = sweep.load_layers()       # per-layer sparsity, keyed by trial_key
    model = sweep.load_model(df.trial_key[0])   # a trial's pruned, finetuned nn.Module
"""

from typing import Any

from sweep._version import __version__
from sweep.results import load_layers, load_results

__all__ = ["__version__", "load_layers", "load_model", "load_results", "run_trial"]


def __getattr__(name: str) -> Any:
    # Reading results needs pandas only; importing torch for it would cost seconds.
    if name == "run_trial":
        from sweep.trial import run_trial

        return run_trial
    if name == "load_model":
        from sweep.export import load_model

        return load_model
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
