"""Trade-off analysis of a results store: DataFrames in, DataFrames or matplotlib figures out.

    import sweep
    from sweep import analysis

    df = sweep.load_results()
    analysis.varying(df)                                    # what else differs: splits curves
    analysis.tradeoff(df)                                   # accuracy vs sparsity per setting
    analysis.pareto_front(df, {"acc_finetuned": "max", "sparsity": "max"})
    analysis.highest_sparsity_within(df, tolerance=0.01)

Nothing averages unlike things: a setting is a method with every config value that differs
between trials (`varying`: finetune epochs, method.n, scope, model, dataset...), and only the
seeds of one setting share a point. Rows of method ``none`` are the dense reference, drawn as a
level, never a curve; rows of a layer sensitivity analysis (``tag`` ``sensitivity``, see
`sweep.sensitivity`) are no trials of a trade-off and are left out (`ordinary`), but for
`plot_sensitivity`, which draws them. Functions never call ``show``; figures are returned for
a notebook to display or a report to save.
"""

from sweep.analysis._plots import plot_layer_sparsity, plot_pareto, plot_sensitivity, tradeoff
from sweep.analysis._tables import (
    SENSITIVITY_TAG,
    aggregate,
    check_one_analysis,
    check_tolerance,
    complete,
    compression_ratio,
    dense_levels,
    highest_sparsity_within,
    layer_sparsity,
    ordinary,
    pareto_front,
    setting_label,
    setting_labels,
    subjects,
    varying,
)

__all__ = [
    "SENSITIVITY_TAG",
    "aggregate",
    "check_one_analysis",
    "check_tolerance",
    "complete",
    "compression_ratio",
    "dense_levels",
    "highest_sparsity_within",
    "layer_sparsity",
    "ordinary",
    "pareto_front",
    "plot_layer_sparsity",
    "plot_pareto",
    "plot_sensitivity",
    "setting_label",
    "setting_labels",
    "subjects",
    "tradeoff",
    "varying",
]
