"""Optuna samplers and pruners from a study definition's `[sampler]` and `[pruner]` tables."""

from __future__ import annotations

from typing import Any

import optuna


def build_sampler(settings: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    name = settings["name"]
    startup = int(settings.get("n_startup_trials", 10))
    if name == "tpe":
        # multivariate+group handle conditional params; constant_liar keeps parallel workers apart.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup)
    raise ValueError(f"sampler {name!r}; expected tpe, random, gp or cmaes")


def build_pruner(settings: dict[str, Any], max_epochs: int) -> optuna.pruners.BasePruner:
    name = settings["name"]
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(settings.get("min_resource", 1)), max_resource=max_epochs,
                                              reduction_factor=int(settings.get("reduction_factor", 3)))
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=int(settings.get("min_resource", 1)),
                                                      reduction_factor=int(settings.get("reduction_factor", 3)),
                                                      min_early_stopping_rate=int(settings.get("min_early_stopping_rate", 0)))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(settings.get("n_startup_trials", 5)),
                                           n_warmup_steps=int(settings.get("n_warmup_steps", 1)))
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(lower=float(settings.get("lower", 0.0)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner {name!r}; expected hyperband, sha, median or none")
