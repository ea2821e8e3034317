"""prune-sweep: neural-network pruning as a hyperparameter search dimension.

    python -m sweep method=ln_structured amount=0.5

and in a notebook::

    import sweep
    df = sweep.load_results()          # one row per trial
    layers = sweep.load_layers()       # per-layer sparsity, keyed by trial_key
"""

from sweep.store import load_layers, load_results
from sweep.trial import run_trial

__version__ = "0.1.0"

__all__ = ["__version__", "load_layers", "load_results", "run_trial"]
