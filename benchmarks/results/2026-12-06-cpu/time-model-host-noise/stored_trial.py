"""Shared by the scripts here: a stored trial's configuration, and the plan's predicted training and
validation seconds of it."""

from __future__ import annotations

import optuna

from search.plan.epoch_forecast import data_sizes, time_model_of
from search.plan.epoch_time import EpochTimeModel, training_shape, validated_pixels
from seg.config import Config
from seg.data import SegmentationData


def trial_config(storage: str, study: str, number: int, epochs: int) -> Config:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.load_study(study_name=study, storage=storage).trials[number]
    return Config.from_dict(trial.user_attrs["config"]).replace(train={"epochs": epochs, "device": "cpu"})


def stored_model(storage: str, study: str) -> EpochTimeModel:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return time_model_of(optuna.load_study(study_name=study, storage=storage))


def predicted(model: EpochTimeModel, cfg: Config, data: SegmentationData) -> tuple[float, float, int, float]:
    """(training s, validation s, samples an epoch, validated pixels) of one epoch as the model predicts it."""
    train, val = data_sizes(data)
    hw, samples = training_shape(cfg, train)
    pixels = validated_pixels(cfg, val)
    return model.train_seconds(cfg, hw, samples), model.eval_seconds(cfg, pixels), samples, pixels
