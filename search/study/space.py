"""Turn (trial, study definition) into the frozen `seg.config.Config` a trial trains.

Pure: it samples through `trial.suggest_*` and builds a config; no training, no logging.
Conditional parameters are sampled only where they matter (momentum for sgd/rmsprop, nesterov
for sgd, plateau settings for the plateau scheduler). Widths are never tuple categoricals:
the channel list is derived in `ModelConfig.level_channels()` from base and max widths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from search.study.definition import Dimension, StudyDef, config_fields
from seg.config import Config

# child param -> (parent param, parent values for which the child is sampled)
CONDITIONS: dict[str, tuple[str, frozenset[str]]] = {
    "train.momentum": ("train.optimizer", frozenset({"sgd", "rmsprop"})),
    "train.nesterov": ("train.optimizer", frozenset({"sgd"})),
    "train.plateau_patience": ("train.scheduler", frozenset({"plateau"})),
    "train.plateau_factor": ("train.scheduler", frozenset({"plateau"})),
}
MIN_BOTTLENECK_PX = 4


class Suggester(Protocol):
    """The part of `optuna.trial.Trial` this module uses (so it imports no optuna)."""

    number: int

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


class InfeasibleConfigError(ValueError):
    """A sampled configuration that cannot work; rejected before any training."""


@dataclass(frozen=True)
class RunOptions:
    """Command-line overrides that apply to every trial of a run."""

    data_root: str | None = None
    epochs: int | None = None
    device: str = "auto"
    seed: int = 0
    trial_timeout_s: float | None = None  # wall-clock limit per trial
    memory_limit_gb: float | None = None  # reject configs estimated above it (default on CUDA: free memory)


def sample_values(trial: Suggester, sdef: StudyDef) -> dict[str, Any]:
    """Every dimension's value for this trial: fixed values as given, ranged ones suggested."""
    values: dict[str, Any] = {d.name: d.value for d in sdef.space if d.fixed}
    # Parents before children, so a condition can read its parent's value.
    for dim in sorted((d for d in sdef.space if not d.fixed), key=lambda d: d.name in CONDITIONS):
        parent = CONDITIONS.get(dim.name)
        if parent and values.get(parent[0]) not in parent[1]:
            continue
        values[dim.name] = _suggest(trial, dim)
    for child, (parent, allowed) in CONDITIONS.items():
        if child in values and values.get(parent) not in allowed:
            del values[child]  # a fixed child that does not apply keeps the config default
    return values


def _suggest(trial: Suggester, dim: Dimension) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(dim.name, list(dim.choices))
    if isinstance(dim.low, int) and isinstance(dim.high, int) and not isinstance(dim.step, float):
        return trial.suggest_int(dim.name, dim.low, dim.high, step=dim.step or 1, log=dim.log)
    return trial.suggest_float(dim.name, float(dim.low), float(dim.high), step=dim.step, log=dim.log)


def build_config(values: dict[str, Any], sdef: StudyDef, opts: RunOptions, trial_number: int) -> Config:
    """The trial's config: study data + sampled/fixed values + run overrides. Raises ValueError."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "data": dict(sdef.data), "transforms": {}, "train": {}}
    for name, value in values.items():
        sections[name.split(".", 1)[0]].update(config_fields(name, value))
    if opts.data_root is not None:
        sections["data"]["root"] = opts.data_root
    sections["model"]["num_classes"] = sections["data"].get("num_classes", 10)
    sections["train"].update(epochs=opts.epochs or sdef.max_epochs, device=opts.device, seed=opts.seed + trial_number)
    return Config.from_dict(sections, source=f"trial {trial_number} of study {sdef.name}")


def config_from_trial(trial: Suggester, sdef: StudyDef, opts: RunOptions) -> Config:
    """Sample, build and check one trial's config."""
    cfg = build_config(sample_values(trial, sdef), sdef, opts, trial.number)
    check_feasible(cfg)
    return cfg


def check_feasible(cfg: Config) -> None:
    """Reject configs that cannot train, e.g. a bottleneck smaller than 4 px for the crop."""
    t, m = cfg.transforms, cfg.model
    side = t.crop_size if t.crop_mode != "none" else (min(t.resize) if t.resize else None)
    if side is not None:
        bottleneck = side // m.size_divisor
        if bottleneck < MIN_BOTTLENECK_PX:
            raise InfeasibleConfigError(
                f"depth {m.depth} shrinks the {side}px training crop to a {bottleneck}px bottleneck "
                f"(< {MIN_BOTTLENECK_PX}px); use depth <= {_max_depth(side)} or a larger crop")
    if t.crop_mode == "five" and t.resize and t.crop_size > min(t.resize):
        raise InfeasibleConfigError(f"five-crop size {t.crop_size} exceeds the resized image "
                                    f"{t.resize[0]}x{t.resize[1]}")


def _max_depth(side: int) -> int:
    depth = 1
    while side // 2 ** depth >= MIN_BOTTLENECK_PX:
        depth += 1
    return depth
