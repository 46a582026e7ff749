"""MLflow Model Registry: the study's best trial is registered under the study's name, alias `champion`.

(Stub; issue 6 fills it in.)
"""

from __future__ import annotations

import optuna


class ChampionCallback:
    """Optuna study callback: when the finished trial is the study's best, register its model and move `champion`."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        return None
