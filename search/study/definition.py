"""Study definitions as data: one TOML file per study (see studies/default.toml).

A definition holds the direction and metric, the dataset, the budgets (trials and/or total
epochs), sampler and pruner settings, the search space, and the confirmation of its top trials.
Each space entry is fixed (a plain value) or ranged:
`{ low = .., high = .., log = true, step = .. }` (int when both bounds are ints) or
`{ choices = [..] }`. Everything is checked when the file is read; errors name the file and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from search.study.samplers_pruners import PRUNERS, SAMPLERS, build_pruner, settings_for
from seg.config import DataConfig, ModelConfig, TrainConfig, TransformConfig

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"
METRICS = ("val_miou",)
SECTIONS = {"model": ModelConfig, "train": TrainConfig, "transforms": TransformConfig}


def scale_jitter_fields(jitter: Any) -> dict[str, float]:
    """`transforms.scale_jitter` s, a space key that is no config field: scale in (1 - s, 1 + s)."""
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter < 1:
        raise ValueError("expected 0 <= scale_jitter < 1")
    return {"scale_min": 1.0 - jitter, "scale_max": 1.0 + jitter}


# Space keys beyond the config fields, each with the config fields it stands for (checked and built here only).
DERIVED = {"transforms.scale_jitter": scale_jitter_fields}


def config_fields(name: str, value: Any) -> dict[str, Any]:
    """The config fields of one space entry `section.key`: itself, or what a derived key expands to."""
    derive = DERIVED.get(name)
    return derive(value) if derive else {name.split(".", 1)[1]: value}


@dataclass(frozen=True)
class Dimension:
    """One search-space entry: fixed `value`, or ranged by bounds or choices."""

    name: str  # "section.key", also the Optuna param name
    value: Any = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def fixed(self) -> bool:
        return self.low is None and self.choices is None


@dataclass(frozen=True)
class StudyDef:
    name: str
    path: Path
    metric: str = "val_miou"
    direction: str = "maximize"
    data_required: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    trials: int | None = 50  # None: no trial limit (a file that gives budget.total_epochs alone)
    total_epochs: int | None = None
    max_epochs: int = 8
    timeout_s: float | None = None
    trial_timeout_s: float | None = None  # wall-clock limit of one trial
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "hyperband"})
    space: tuple[Dimension, ...] = ()
    baseline: dict[str, Any] | None = None
    confirm_top: int = 0  # [confirm] top: retrain this many of the best trials after the search (0: none)
    confirm_seeds: int = 3  # [confirm] seeds: fresh training seeds per retrained configuration
    # [confirm] share: the part of the time budget (--timeout, else budget.timeout_s) kept for the retrains:
    # the search stops starting trials at (1 - share) of it, and the retrains fill the rest (0: none kept).
    confirm_share: float = 0.0
    # [confirm] margin: another trial replaces the [baseline] trial in the retrains only when its value beats
    # the baseline's by more than this (short trials' values scatter over training seeds; 0: rank by value).
    confirm_margin: float = 0.0
    time_model: dict[str, Any] | None = None  # [plan] time_model: a planned file's epoch-time model (plain data)

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.space if d.name == name), None)

    def identity(self) -> dict[str, Any]:
        """What may not change when a stored study is resumed: direction, metric and space."""
        return {"direction": self.direction, "metric": self.metric,
                "space": {d.name: _dim_plain(d) for d in self.space}}

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def _dim_plain(d: Dimension) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(d).items()
            if k != "name" and v is not None and v is not False}


def resolve_study_path(name_or_file: str) -> Path:
    """`default` -> studies/default.toml; a path is taken as is."""
    path = Path(name_or_file)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"study file {path} does not exist")
        return path
    candidate = STUDIES_DIR / f"{name_or_file}.toml"
    if not candidate.is_file():
        known = sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))
        raise FileNotFoundError(f"no study named {name_or_file!r}: {candidate} does not exist; known studies: {known}")
    return candidate


def load_study(name_or_file: str | Path) -> StudyDef:
    path = resolve_study_path(str(name_or_file))
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from err
    return parse_study(raw, path)


def parse_study(raw: dict[str, Any], path: Path) -> StudyDef:
    known = {"study", "data", "budget", "sampler", "pruner", "space", "baseline", "confirm", "plan"}
    _no_unknown(path, "top level", raw, known)
    study = raw.get("study", {})
    _no_unknown(path, "[study]", study, {"name", "metric", "direction", "data_required"})
    budget = raw.get("budget", {})
    _no_unknown(path, "[budget]", budget, {"trials", "total_epochs", "max_epochs", "timeout_s", "trial_timeout_s"})
    confirm = raw.get("confirm", {})
    _no_unknown(path, "[confirm]", confirm, {"top", "seeds", "share", "margin"})
    _no_unknown(path, "[baseline]", raw.get("baseline", {}), {"params"})
    plan = raw.get("plan", {})
    _no_unknown(path, "[plan]", plan, {"time_model"})
    data = raw.get("data", {})
    _no_unknown(path, "[data]", data, {f.name for f in dataclasses.fields(DataConfig)})
    sdef = StudyDef(
        name=study.get("name", path.stem),
        path=path,
        metric=study.get("metric", "val_miou"),
        direction=study.get("direction", "maximize"),
        data_required=bool(study.get("data_required", False)),
        data=dict(data),
        trials=_count(path, "[budget] trials", budget.get("trials", None if "total_epochs" in budget else 50), 1),
        total_epochs=_count(path, "[budget] total_epochs", budget.get("total_epochs"), 1),
        max_epochs=int(budget.get("max_epochs", 8)),
        timeout_s=budget.get("timeout_s") or None,
        trial_timeout_s=budget.get("trial_timeout_s") or None,
        sampler={"name": "tpe", **raw.get("sampler", {})},
        pruner={"name": "hyperband", **raw.get("pruner", {})},
        space=_parse_space(path, raw.get("space", {})),
        baseline=raw.get("baseline", {}).get("params") if raw.get("baseline") else None,
        confirm_top=_count(path, "[confirm] top", confirm.get("top", 0), 0),
        confirm_seeds=_count(path, "[confirm] seeds", confirm.get("seeds", 3), 1),
        confirm_share=_fraction(path, "share", "a fraction of the budget", confirm.get("share", 0.0)),
        confirm_margin=_fraction(path, "margin", "a lead in the metric", confirm.get("margin", 0.0)),
        time_model=plan.get("time_model"),
    )
    _check(sdef)
    return sdef


def _count(path: Path, where: str, value: Any, least: int) -> int | None:
    """An integer setting (None stays None), at least `least`; else an error naming the file and key."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{path}: {where} = {value!r}; expected an integer >= {least}")
    return value


def _fraction(path: Path, key: str, what: str, value: Any) -> float:
    """A [confirm] number in 0 <= value < 1 (`what` it is, for the error naming the file and key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{path}: [confirm] {key} must be {what}, 0 <= {key} < 1, got {value!r}")
    return float(value)


def _no_unknown(path: Path, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)} in {where}; expected some of {sorted(allowed)}")


def _parse_space(path: Path, space: dict[str, Any]) -> tuple[Dimension, ...]:
    _no_unknown(path, "[space]", space, set(SECTIONS))
    dims = []
    for section, entries in space.items():
        derived = {name.split(".", 1)[1] for name in DERIVED if name.startswith(f"{section}.")}
        allowed = {f.name for f in dataclasses.fields(SECTIONS[section])} | derived
        _no_unknown(path, f"[space.{section}]", entries, allowed)
        for key, spec in entries.items():
            dims.append(_parse_dimension(path, f"{section}.{key}", spec))
    return tuple(dims)


def _parse_dimension(path: Path, name: str, spec: Any) -> Dimension:
    if not isinstance(spec, dict):
        return Dimension(name, value=tuple(spec) if isinstance(spec, list) else spec)
    where = f"{path}: space entry {name}"
    _no_unknown(path, f"space entry {name}", spec, {"low", "high", "log", "step", "choices"})
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ValueError(f"{where}: expected {{ choices = [a, b, ...] }} with a non-empty list and nothing else")
        return Dimension(name, choices=tuple(spec["choices"]))
    if "low" not in spec or "high" not in spec:
        raise ValueError(f"{where}: expected a fixed value, {{ low = .., high = .. }} or {{ choices = [..] }}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        raise ValueError(f"{where}: expected numbers with low <= high, got low={low!r}, high={high!r}")
    if spec.get("log") and low <= 0:
        raise ValueError(f"{where}: log scale needs low > 0, got low={low!r}")
    step = spec.get("step")
    if step is not None and (spec.get("log") or not isinstance(step, (int, float)) or step <= 0):
        raise ValueError(f"{where}: step={step!r}; expected a positive number, and no step on a log scale")
    return Dimension(name, low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))


def _check(sdef: StudyDef) -> None:
    p = sdef.path
    if sdef.metric not in METRICS:
        raise ValueError(f"{p}: [study] metric={sdef.metric!r}; expected one of {list(METRICS)}")
    if sdef.direction not in ("maximize", "minimize"):
        raise ValueError(f"{p}: [study] direction={sdef.direction!r}; expected 'maximize' or 'minimize'")
    settings_for("sampler", SAMPLERS, sdef.sampler, where=f"{p}: [sampler] ")
    settings_for("pruner", PRUNERS, sdef.pruner, where=f"{p}: [pruner] ")
    try:  # Optuna's own checks (reduction_factor >= 2, 0 <= percentile <= 100, ...), named by the file
        build_pruner(sdef.pruner, max(sdef.max_epochs, 1))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: [pruner] {sdef.pruner}: {exc}") from exc
    if sdef.max_epochs < 1:
        raise ValueError(f"{p}: [budget] max_epochs must be >= 1")
    if sdef.trial_timeout_s is not None and not sdef.trial_timeout_s > 0:
        raise ValueError(f"{p}: [budget] trial_timeout_s must be a positive number of seconds, "
                         f"got {sdef.trial_timeout_s!r}")
    for dim in sdef.space:
        _check_values(p, dim)
    if sdef.baseline is not None:
        names = {d.name for d in sdef.space if not d.fixed}
        unknown = set(sdef.baseline) - names
        if unknown:
            raise ValueError(f"{p}: [baseline.params] names {sorted(unknown)}, which are not ranged in [space]; "
                             f"expected some of {sorted(names)}")


def _check_values(path: Path, dim: Dimension) -> None:
    """Each fixed value, choice and bound must be valid for its config field, checked when read."""
    section, key = dim.name.split(".", 1)
    candidates = [dim.value] if dim.fixed else list(dim.choices or (dim.low, dim.high))
    for value in candidates:
        try:
            _check_one(section, key, config_fields(dim.name, value))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: space entry {dim.name}: value {value!r} is not valid: {err}") from None


def _check_one(section: str, key: str, fields: dict[str, Any]) -> None:
    value = fields.get(key)
    # Widths are checked against each other only once both are known; here each alone.
    if key == "base_channels":
        fields["max_channels"] = max(value, 1) if isinstance(value, int) else value
    if key == "max_channels":
        fields["base_channels"] = 1
    if key == "crop_mode" and value == "five":
        fields["resize"] = (1024, 1024)
    if key == "channels":
        fields["depth"] = len(value) if isinstance(value, (list, tuple)) else 0
    SECTIONS[section](**fields)
