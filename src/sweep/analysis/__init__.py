"""Trade-off analysis of a results store: DataFrames in, DataFrames or matplotlib figures out.

    import sweep
    from sweep import analysis

    df = sweep.load_results()
    analysis.tradeoff(df)                                   # accuracy vs sparsity per method
    analysis.pareto_front(df, {"acc_finetuned": "max", "sparsity": "max"})
    analysis.highest_sparsity_within(df, tolerance=0.01)

Functions never call ``show``; figures are returned for a notebook to display or a report to save.
"""

from sweep.analysis._plots import plot_layer_sparsity, plot_pareto, tradeoff
from sweep.analysis._tables import (
    aggregate,
    compression_ratio,
    highest_sparsity_within,
    layer_sparsity,
    pareto_front,
)

__all__ = [
    "aggregate",
    "compression_ratio",
    "highest_sparsity_within",
    "layer_sparsity",
    "pareto_front",
    "plot_layer_sparsity",
    "plot_pareto",
    "tradeoff",
]
