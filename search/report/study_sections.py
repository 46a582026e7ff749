"""Study-level figures (optuna.visualization.matplotlib): history, pruning curves, importances, parallel coordinates."""

from __future__ import annotations

import matplotlib.pyplot as plt
import optuna

from search.report.html import Section, image, note
from search.tracking.figures import MIN_COMPLETE, study_figure


def plot_or_note(name: str, study: optuna.Study, alt: str) -> str:
    """The figure, or a note saying why this study cannot have it (Optuna raises on degenerate studies)."""
    try:
        fig = study_figure(study, name)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        plt.close("all")
        return note(f"{alt}: not available for this study ({err}).")
    fig.set_size_inches(10, 5.5)
    return image(fig, alt)


def complete_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def history_section(study: optuna.Study) -> Section:
    if complete_count(study) == 0:
        return Section("history", "Optimisation history", note("No complete trial yet: no history to plot."))
    return Section("history", "Optimisation history", plot_or_note("optimization_history", study,
                                                                   "optimisation history"))


def pruning_section(study: optuna.Study) -> Section:
    trials = study.get_trials(deepcopy=False)
    if not any(t.intermediate_values for t in trials):
        return Section("pruning", "Pruning curves", note("No trial reported an intermediate value."))
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    intro = (f"<p>Val mIoU reported after each epoch (Optuna step = epochs completed); {pruned} of {len(trials)} "
             "trials were pruned where their curve stops early.</p>")
    return Section("pruning", "Pruning curves (intermediate values)",
                   intro + plot_or_note("intermediate_values", study, "intermediate values"))


def importance_section(study: optuna.Study) -> Section:
    return _needs_complete_trials(study, "importances", "Param importances", "param_importances")


def parallel_section(study: optuna.Study) -> Section:
    return _needs_complete_trials(study, "parallel", "Parallel coordinates", "parallel_coordinate")


def _needs_complete_trials(study: optuna.Study, key: str, title: str, plot: str) -> Section:
    """A plot that needs a few complete trials; a note saying so before then."""
    n = complete_count(study)
    if n < MIN_COMPLETE[plot]:
        return Section(key, title, note(f"{title} need at least {MIN_COMPLETE[plot]} complete trials; "
                                        f"this study has {n}."))
    return Section(key, title, plot_or_note(plot, study, title.lower()))
