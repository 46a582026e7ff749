"""The study's figures (optuna.visualization.matplotlib): history, pruning curves, importances and
parallel coordinates. One builder for both the parent run's `plots/` and the HTML report."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import optuna
from optuna.visualization import matplotlib as ovm

from search.tracking.client import Tracker

# Importances and parallel coordinates compare complete trials: they need two.
MIN_COMPLETE = {"param_importances": 2, "parallel_coordinate": 2}
PLOTS = {
    "optimization_history": ovm.plot_optimization_history,
    "intermediate_values": ovm.plot_intermediate_values,
    "param_importances": ovm.plot_param_importances,
    "parallel_coordinate": ovm.plot_parallel_coordinate,
}


def study_figure(study: optuna.Study, name: str) -> plt.Figure:
    """One of PLOTS for the study; Optuna raises ValueError or RuntimeError where the study cannot have it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks the matplotlib backend experimental
        ax = PLOTS[name](study)
    if name == "intermediate_values":
        _drop_long_legend(ax)
    return ax.figure if hasattr(ax, "figure") else ax.flat[0].figure


def study_figures(study: optuna.Study) -> dict[str, plt.Figure]:
    """The figures that the study's trials allow (importances need two complete trials)."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {name: study_figure(study, name) for name in PLOTS
            if len(complete) >= MIN_COMPLETE.get(name, 0)}


def _drop_long_legend(ax: plt.Axes, most: int = 12) -> None:
    """Optuna lists every trial in the legend; past a dozen it only overflows the figure (matplotlib
    then warns that tight layout cannot be applied) and names nothing readable."""
    legend = ax.get_legend()
    if legend is not None and len(legend.get_texts()) > most:
        legend.remove()


def log_study_plots(tracker: Tracker, run_id: str, study: optuna.Study) -> list[str]:
    names = []
    for name, fig in study_figures(study).items():
        fig.set_size_inches(10, 6)
        tracker.log_figure(run_id, fig, f"plots/{name}.png")
        names.append(name)
    plt.close("all")
    return names
