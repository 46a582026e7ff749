"""Each trial's predicted seconds per epoch, from the plan's time model, beside its measured ones.

A planned study (`search.run --data DIR`) keeps the plan's fingerprint as a study user attr, and a
planned study file (`search.plan --out FILE`, run with `--study FILE`) carries it in [plan]; its
`time_model` (`search.plan.epoch_time`) costs the trial's sampled configuration on the decoded data,
the way the plan costed the space. The trial records the prediction (`epoch_seconds_predicted`:
an Optuna user attr and an MLflow metric at step 0, beside the per-epoch `epoch_seconds`) and, once
it ends, the median measured epoch and the ratio. The first epoch whose seconds exceed the prediction
by more than WARN_RATIO prints one warning line per process: the budget (trials x epochs) was
planned from the prediction, so fewer trials will fit.
"""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from rich.console import Console
from rich.markup import escape

from search.plan.epoch_time import EpochTimeModel
from search.plan.stored import FINGERPRINT_ATTR
from seg.config import Config
from seg.data import SegmentationData

PREDICTED = "epoch_seconds_predicted"
MEASURED = "epoch_seconds"
RATIO = "epoch_time_ratio"
WARN_RATIO = 1.5


def time_model_of(study: optuna.Study, from_file: dict[str, Any] | None = None) -> EpochTimeModel | None:
    """The plan's time model stored with the study (`search.run --data`), else the one a planned study
    file carries in [plan] (`search.run --study FILE`), or None (a study file that was not planned)."""
    fingerprint = study.user_attrs.get(FINGERPRINT_ATTR) or {}
    stored = fingerprint.get("time_model") or from_file
    return EpochTimeModel.from_dict(stored) if stored else None


def data_sizes(data: SegmentationData) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(H, W) of each decoded training and validation image."""
    def sizes(images: Any) -> list[tuple[int, int]]:
        return [(int(img.shape[-2]), int(img.shape[-1])) for img in images]

    return sizes(data.train.images), sizes(data.val.images)


class EpochForecast:
    """One process's predictions and its one warning."""

    def __init__(self, console: Console | None = None) -> None:
        self.model: EpochTimeModel | None = None
        self.loaded = False
        self.warned = False
        self.console = console or Console(stderr=True)

    def predict(self, study: optuna.Study, cfg: Config, data: SegmentationData, device: str,
                from_file: dict[str, Any] | None = None) -> float | None:
        """Seconds an epoch of `cfg` should take, or None without a time model for this kind of device
        (`from_file`: the study file's [plan] time_model)."""
        if not self.loaded:  # the plan is stored before the first trial and never changes: read it once
            self.model, self.loaded = time_model_of(study, from_file), True
        if self.model is None or self.model.device != device:
            return None
        train, val = data_sizes(data)
        if not train:
            return None
        return self.model.predict(cfg, train, val)

    def check(self, trial_number: int, seconds: float, predicted: float | None) -> bool:
        """Warn once (one line) when an epoch took more than WARN_RATIO x the prediction; True if it did."""
        if self.warned or not predicted or seconds / predicted <= WARN_RATIO:
            return False
        self.warned = True
        self.console.print(escape(
            f"warning: trial {trial_number}'s epoch took {seconds:.1f} s, {seconds / predicted:.1f}x the plan's "
            f"predicted {predicted:.1f} s: fewer trials will fit the time budget than planned (shown once)"),
            soft_wrap=True)
        return True


def summary(seconds: list[float], predicted: float | None) -> dict[str, float]:
    """The trial's median measured epoch and, with a prediction, measured / predicted."""
    if not seconds:
        return {}
    median = statistics.median(seconds)
    out = {MEASURED: round(median, 3)}
    if predicted:
        out[RATIO] = round(median / predicted, 3)
    return out
