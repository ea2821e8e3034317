"""What a sweep prints at its end: the trials' counts, and the best trial or the Pareto front
as a table with the store's columns."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.hashing import mask_password
from sweep.search._layerwise import AMOUNTS, amounts_text
from sweep.search._rows import study_rows
from sweep.search._study import StudySettings, given_back
from sweep.search._tell import reads_latency
from sweep.store import DEFAULT_PATH, load_results, results_frame, rows_table


def summary(study: optuna.Study, settings: StudySettings, store: Path) -> str:
    """The best trial (one objective) or the Pareto front, as a table with the store's columns."""
    states = [t.state for t in study.get_trials(deepcopy=False) if not given_back(t)]
    counts = ", ".join(
        f"{states.count(s)} {s.name.lower()}"
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        if states.count(s)
    )
    head = (
        f"study {settings.study_name}: {len(states)} trials ({counts or 'none finished'}) "
        f"in {mask_password(settings.storage)}"
    )
    if TrialState.COMPLETE not in states:
        return head
    best = study.best_trials if settings.multi_objective else [study.best_trial]
    title = "Pareto front" if settings.multi_objective else "best trial"
    pairs = list(zip(settings.objectives, settings.directions, strict=True))
    goals = ", ".join(f"{d} {o}" for o, d in pairs)
    df = _study_rows(study, store)
    df = df.drop_duplicates("optuna.trial", keep="last").set_index("optuna.trial")
    df = df.reindex([t.number for t in best])
    df, amounts = _searched_amounts(df)
    columns = ["trial_key", "method", *amounts, "sparsity", "acc_finetuned", *settings.objectives]
    first, direction = pairs[0]
    table = df[list(dict.fromkeys(columns))].sort_values(first, ascending=direction == "minimize")
    table.index.name = "trial"
    text = f"{head}\n{title} ({goals}):\n{table.to_string(float_format=lambda v: f'{v:.4f}')}"
    noisy = int(df["latency_noisy"].fillna(False).sum()) if "latency_noisy" in df else 0
    if noisy and any(map(reads_latency, settings.objectives)):
        text += (
            f"\n{noisy} of these trials have noisy latency (latency_noisy): their interval "
            "stayed wider than latency.width; see README, Latency you can trust"
        )
    return text + _load_hint(study, table, df, store)


def _load_hint(study: optuna.Study, table, df, store: Path) -> str:
    """How to load the first of ``table``'s trials whose model this worker's store holds;
    else, where workers wrote to stores of their own, which host holds the first kept one."""
    files = df.loc[table.index, "model_file"] if "model_file" in df else None
    if files is None or not files.notna().any():
        return ""
    path = "" if str(store) == DEFAULT_PATH else f", path={str(store)!r}"
    for number, file in files.items():
        if isinstance(file, str) and (Path(store).expanduser() / file).is_file():
            key = table.loc[number, "trial_key"]
            return f"\nload a trial's pruned model: sweep.load_model({key!r}{path})"
    number = files.first_valid_index()
    worker = study.get_trials(deepcopy=False)[number].user_attrs.get("worker") or {}
    return (
        f"\nthe pruned models are in the stores of the workers that ran them: trial {number}'s "
        f"on {worker.get('host', 'its host')}: sweep.load_model("
        f"{table.loc[number, 'trial_key']!r}, path=<that worker's store.path>) there"
    )


def _searched_amounts(df):
    """The summary's amount column(s): ``amount``, and beside it the per-layer amounts
    (``scope.amounts``, as `amounts_text` writes them) of rows that have them, in its place
    when ``amount`` is 0 in every row (``search=layerwise``: it applies to no layer)."""
    per_layer = [c for c in df.columns if c.startswith(AMOUNTS)]
    if not per_layer:
        return df, ["amount"]
    text = [amounts_text(r) for r in df[per_layer].to_dict("records")]
    df = df.assign(**{"scope.amounts": text})
    return df, ["scope.amounts"] if (df["amount"] == 0).all() else ["amount", "scope.amounts"]


def _study_rows(study: optuna.Study, store: Path):
    """The study's rows: from the study itself (every worker's, whatever disk it wrote to),
    or from the local store for a study whose trials hold none (written before they did)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if any("row" in t.user_attrs for t in done):
        rows = study_rows(study._storage, study.study_name, "row")
        return results_frame(rows_table(rows, "row"))
    df = load_results(store)
    uid = study.user_attrs.get("uid")
    return df[(df["optuna.study"] == study.study_name) & (df.get("optuna.uid") == uid)]
