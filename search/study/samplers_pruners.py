"""Optuna samplers and pruners from a study definition's `[sampler]` and `[pruner]` tables.

One table each, `{name: (class, {key: default})}`: the keys a name takes are exactly its
defaults' keys, so a setting another sampler or pruner would take is refused, not ignored.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import optuna

PRUNERS: dict[str, tuple[type[optuna.pruners.BasePruner], dict[str, Any]]] = {
    # max_resource is the study's max_epochs (see build_pruner).
    "hyperband": (optuna.pruners.HyperbandPruner, {"min_resource": 1, "reduction_factor": 3}),
    "sha": (optuna.pruners.SuccessiveHalvingPruner,
            {"min_resource": 1, "reduction_factor": 3, "min_early_stopping_rate": 0}),
    # n_min_trials: no cut at an epoch that fewer completed trials have reached (Optuna's default 1).
    "median": (optuna.pruners.MedianPruner, {"n_startup_trials": 5, "n_warmup_steps": 1, "n_min_trials": 1}),
    # Median generalised: a trial goes on while its best value is in the top `percentile` % of the
    # completed trials' values at the same epoch (median = 50).
    "percentile": (optuna.pruners.PercentilePruner, {"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": 1,
                                                     "n_min_trials": 1}),
    "none": (optuna.pruners.NopPruner, {}),
    # Prunes below `lower`: for forcing pruning in tests, not for searching.
    "threshold": (optuna.pruners.ThresholdPruner, {"lower": 0.0}),
}

SAMPLERS: dict[str, tuple[type[optuna.samplers.BaseSampler], dict[str, Any]]] = {
    "tpe": (optuna.samplers.TPESampler, {"n_startup_trials": 10}),
    "random": (optuna.samplers.RandomSampler, {}),
    "gp": (optuna.samplers.GPSampler, {"n_startup_trials": 10}),
    "cmaes": (optuna.samplers.CmaEsSampler, {"n_startup_trials": 10}),
}
# multivariate + group handle conditional params; constant_liar keeps parallel workers apart.
FIXED_SAMPLER_ARGS = {"tpe": {"multivariate": True, "group": True, "constant_liar": True}}


def settings_for(kind: str, table: Mapping[str, tuple[type, dict[str, Any]]], settings: Mapping[str, Any],
                 where: str = "") -> dict[str, Any]:
    """The keyword arguments for `settings` ({'name': ..., key: value}): the name's defaults, overridden
    by the given values cast to the defaults' types; unknown names and keys are refused by name."""
    name = settings.get("name")
    if name not in table:
        raise ValueError(f"{where}{kind} {name!r}; expected one of {list(table)}")
    defaults = table[name][1]
    unknown = sorted(set(settings) - {"name"} - set(defaults))
    if unknown:
        raise ValueError(f"{where}{kind} {name!r} takes {sorted(defaults) or 'no settings'}, not {unknown}")
    return {key: type(default)(settings.get(key, default)) for key, default in defaults.items()}


def build_sampler(settings: Mapping[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    kwargs = settings_for("sampler", SAMPLERS, settings)
    cls = SAMPLERS[settings["name"]][0]
    return cls(seed=seed, **kwargs, **FIXED_SAMPLER_ARGS.get(settings["name"], {}))


def build_pruner(settings: Mapping[str, Any], max_epochs: int) -> optuna.pruners.BasePruner:
    kwargs = settings_for("pruner", PRUNERS, settings)
    if settings["name"] == "hyperband":
        kwargs["max_resource"] = max_epochs
    return PRUNERS[settings["name"]][0](**kwargs)


def parse_pruner(text: str) -> dict[str, Any]:
    """'sha:reduction_factor=4,min_resource=2' -> {'name': 'sha', 'reduction_factor': 4, 'min_resource': 2}.

    The `--pruner` form of a study file's [pruner] table; numbers with a '.' are floats.
    """
    name, _, rest = text.partition(":")
    settings: dict[str, Any] = {"name": name}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"pruner setting {item!r} in {text!r}: expected key=value")
        try:
            settings[key] = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            raise ValueError(f"pruner setting {item!r} in {text!r}: expected a number") from None
    settings_for("pruner", PRUNERS, settings, where=f"{text!r}: ")
    return settings


def format_pruner(settings: Mapping[str, Any]) -> str:
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
