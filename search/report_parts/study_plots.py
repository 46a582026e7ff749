"""Study-level figures (optuna.visualization.matplotlib): history, pruning curves, importances, parallel coordinates."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import matplotlib.pyplot as plt
import optuna
from optuna.visualization import matplotlib as ovm

from search.report_parts.html import Section, image, note

MIN_COMPLETE_FOR_IMPORTANCE = 2


def render(plot: Callable[..., object], study: optuna.Study) -> plt.Figure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        ax = plot(study)
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.set_size_inches(10, 5.5)
    return fig


def plot_or_note(plot: Callable[..., object], study: optuna.Study, alt: str) -> str:
    """The figure, or a note saying why this study cannot have it (Optuna raises on degenerate studies)."""
    try:
        return image(render(plot, study), alt)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        plt.close("all")
        return note(f"{alt}: not available for this study ({err}).")


def complete_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def history_section(study: optuna.Study) -> Section:
    if complete_count(study) == 0:
        return Section("history", "Optimisation history", note("No complete trial yet: no history to plot."))
    return Section("history", "Optimisation history", plot_or_note(ovm.plot_optimization_history, study,
                                                                   "optimisation history"))


def pruning_section(study: optuna.Study) -> Section:
    trials = study.get_trials(deepcopy=False)
    if not any(t.intermediate_values for t in trials):
        return Section("pruning", "Pruning curves", note("No trial reported an intermediate value."))
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    intro = (f"<p>Val mIoU reported after each epoch (Optuna step = epochs completed); {pruned} of {len(trials)} "
             "trials were pruned where their curve stops early.</p>")
    return Section("pruning", "Pruning curves (intermediate values)",
                   intro + plot_or_note(ovm.plot_intermediate_values, study, "intermediate values"))


def importance_section(study: optuna.Study) -> Section:
    return _needs_complete_trials(study, "importances", "Param importances", ovm.plot_param_importances)


def parallel_section(study: optuna.Study) -> Section:
    return _needs_complete_trials(study, "parallel", "Parallel coordinates", ovm.plot_parallel_coordinate)


def _needs_complete_trials(study: optuna.Study, key: str, title: str, plot) -> Section:
    """A plot that needs a few complete trials; a note saying so before then."""
    n = complete_count(study)
    if n < MIN_COMPLETE_FOR_IMPORTANCE:
        return Section(key, title, note(f"{title} need at least {MIN_COMPLETE_FOR_IMPORTANCE} complete trials; "
                                        f"this study has {n}."))
    return Section(key, title, plot_or_note(plot, study, title.lower()))
