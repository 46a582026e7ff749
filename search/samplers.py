"""Optuna samplers and pruners from a study definition's `[sampler]` and `[pruner]` tables."""

from __future__ import annotations

import argparse
from typing import Any

import optuna

# "threshold" (prune below `lower`) is for forcing pruning in tests; the others are for searching.
PRUNERS = ("hyperband", "sha", "median", "percentile", "none", "threshold")
PRUNER_KEYS = {"name", "min_resource", "reduction_factor", "min_early_stopping_rate", "n_startup_trials",
               "n_warmup_steps", "percentile", "lower"}


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
    if name == "percentile":
        # Median generalised: keep a trial while its best value is in the top `percentile` % of the
        # completed trials' values at the same epoch (median = 50).
        return optuna.pruners.PercentilePruner(percentile=float(settings.get("percentile", 25.0)),
                                               n_startup_trials=int(settings.get("n_startup_trials", 5)),
                                               n_warmup_steps=int(settings.get("n_warmup_steps", 1)))
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(lower=float(settings.get("lower", 0.0)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner {name!r}; expected one of {list(PRUNERS)}")


def parse_pruner(text: str) -> dict[str, Any]:
    """'sha:reduction_factor=4,min_resource=2' -> {'name': 'sha', 'reduction_factor': 4, 'min_resource': 2}.

    The `--pruner` form of a study file's [pruner] table; numbers with a '.' are floats.
    """
    name, _, rest = text.partition(":")
    if name not in PRUNERS:
        raise ValueError(f"pruner {name!r} in {text!r}; expected one of {list(PRUNERS)}")
    settings: dict[str, Any] = {"name": name}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"pruner setting {item!r} in {text!r}: expected key=value")
        if key not in PRUNER_KEYS - {"name"}:
            raise ValueError(f"pruner setting {key!r} in {text!r}; expected one of {sorted(PRUNER_KEYS - {'name'})}")
        try:
            settings[key] = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            raise ValueError(f"pruner setting {item!r} in {text!r}: expected a number") from None
    return settings


def format_pruner(settings: dict[str, Any]) -> str:
    """The inverse of `parse_pruner`: {'name': 'sha', 'min_resource': 1} -> 'sha:min_resource=1'."""
    rest = ",".join(f"{k}={v}" for k, v in sorted(settings.items()) if k != "name")
    return f"{settings['name']}:{rest}" if rest else str(settings["name"])


def pruner_arg(text: str) -> dict[str, Any]:
    """argparse type of --pruner NAME[:KEY=VALUE,...]: parsed, and built once so Optuna's own range checks
    (reduction_factor >= 2, 0 <= percentile <= 100, ...) fail before any trial runs."""
    try:
        settings = parse_pruner(text)
        build_pruner(settings, max_epochs=100)  # any budget: only the settings' own values are checked here
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return settings
