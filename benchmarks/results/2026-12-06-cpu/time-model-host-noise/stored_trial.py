"""Shared by the scripts here: a stored trial's configuration, and the plan's predicted training and
validation seconds of it."""

from __future__ import annotations

import optuna

from search.plan.epoch_forecast import data_sizes, time_model_of
from search.plan.epoch_time import EpochTimeModel, training_shape, validated_pixels
from seg.config import Config
from seg.data import SegmentationData
from seg.train import fit


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


def print_fit_against(model: EpochTimeModel, number: int, cfg: Config, data: SegmentationData) -> None:
    """Train `cfg` with `fit` and print each epoch's training, validation and whole-epoch seconds over the
    model's prediction."""
    train_s, val_s, _, _ = predicted(model, cfg, data)
    for r in fit(cfg, data).history:
        val = r.seconds - r.train_seconds
        print(f"trial {number} epoch {r.epoch}: training {r.train_seconds:.2f} s (x{r.train_seconds / train_s:.2f}), "
              f"validation {val:.2f} s (x{val / val_s:.2f}), epoch x{r.seconds / (train_s + val_s + 0.15):.2f}",
              flush=True)
