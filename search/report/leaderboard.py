"""The leaderboard: every trial with its state, val mIoU, epochs trained and sampled params, best first."""

from __future__ import annotations

import math

import optuna

from search.report.html import Section, note, table
from search.tracking.client import RUN_ID_ATTR

TrialState = optuna.trial.TrialState
# Complete trials first (ranked by value), then pruned (ranked by their best report), then the rest.
STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.FAIL: 3,
               TrialState.WAITING: 4}


def best_reported(trial: optuna.trial.FrozenTrial, maximize: bool) -> float | None:
    """The trial's objective value, or for a pruned trial the best value it reported before pruning."""
    if trial.value is not None:
        return trial.value
    values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
    if not values:
        return None
    return max(values) if maximize else min(values)


def epochs_trained(trial: optuna.trial.FrozenTrial) -> int:
    """Stored by the objective; older trials fall back to the number of reports (one per epoch)."""
    return int(trial.user_attrs.get("epochs_trained", len(trial.intermediate_values)))


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_params(params: dict[str, object]) -> str:
    return ", ".join(f"{name}={format_value(v)}" for name, v in sorted(params.items())) or "(none sampled)"


def ranked(trials: list[optuna.trial.FrozenTrial], maximize: bool) -> list[optuna.trial.FrozenTrial]:
    def key(t: optuna.trial.FrozenTrial) -> tuple[int, float, int]:
        value = best_reported(t, maximize)
        score = math.inf if value is None else (-value if maximize else value)
        return STATE_ORDER.get(t.state, 5), score, t.number

    return sorted(trials, key=key)


def value_cell(trial: optuna.trial.FrozenTrial, maximize: bool) -> str:
    value = best_reported(trial, maximize)
    if value is None:
        return "-"
    return f"{value:.4f}" if trial.state == TrialState.COMPLETE else f"({value:.4f})"


def leaderboard_section(study: optuna.Study) -> Section:
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = ranked(study.get_trials(deepcopy=False), maximize)
    if not trials:
        return Section("leaderboard", "Leaderboard", note("The study has no trials yet."))
    best_number = next((t.number for t in trials if t.state == TrialState.COMPLETE), None)
    rows, classes = [], []
    for t in trials:
        detail = t.user_attrs.get("fail_reason", "")
        rows.append([t.number, t.state.name, value_cell(t, maximize), epochs_trained(t), format_params(t.params),
                     t.user_attrs.get(RUN_ID_ATTR, "-"), detail])
        classes.append("best" if t.number == best_number else "")
    header = ["trial", "state", "val mIoU", "epochs", "params", "MLflow run", "fail reason"]
    legend = ("<p>Ranked by val mIoU, complete trials first. A value in parentheses is the best val mIoU a "
              "pruned trial reported before it was stopped. The best trial is highlighted.</p>")
    return Section("leaderboard", "Leaderboard", legend + table(header, rows, numeric={0, 2, 3}, row_classes=classes))
