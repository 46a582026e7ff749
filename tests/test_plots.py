"""Study plots for the parent run: drawn from a real Optuna study, saved without layout warnings."""

from __future__ import annotations

import io
import warnings

import optuna
import pytest

from search.tracking.figures import study_figures


def _study(n_trials: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i in range(n_trials):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                           "depth": optuna.distributions.IntDistribution(2, 5)})
        for epoch in range(1, 4):
            trial.report(0.1 * epoch + 0.01 * i, epoch)
        study.tell(trial, 0.3 + 0.01 * i)
    return study


@pytest.mark.parametrize("n_trials", [3, 40])
def test_study_figures_save_without_layout_warnings(n_trials):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    figures = study_figures(_study(n_trials))
    assert set(figures) == {"optimization_history", "intermediate_values", "param_importances", "parallel_coordinate"}
    legend = figures["intermediate_values"].axes[0].get_legend()
    # A legend of every trial only while it stays readable (and fits: 40 entries overflow 10x6 inches).
    assert (legend is not None) == (n_trials <= 12)
    for fig in figures.values():
        fig.set_size_inches(10, 6)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig.savefig(io.BytesIO(), format="png")
