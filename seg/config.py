"""The one frozen configuration that flows from the sampler to the model, the trainer and MLflow.

A `Config` is plain data: it round-trips through `to_dict`/`from_dict` (JSON, TOML, checkpoints)
and flattens to `section.key` strings for MLflow params. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

UPSAMPLE_TYPES = ("transpose", "bilinear", "pixelshuffle")
NORM_TYPES = ("batch", "group", "none")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("none", "plateau", "cosine", "onecycle")
CROP_MODES = ("none", "random", "five")
LOSSES = ("ce", "ce_weighted", "dice_ce")  # see seg.losses


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {list(choices)}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ValueError(f"{name}={value!r} is out of range; expected {low} <= {name} <= {high}")


@dataclass(frozen=True)
class ModelConfig:
    """UNet shape. Channels per level are `min(max_channels, base_channels * 2**i)` unless given."""

    in_channels: int = 3
    num_classes: int = 10
    depth: int = 4
    base_channels: int = 16
    max_channels: int = 256
    channels: tuple[int, ...] | None = None
    upsample: str = "transpose"
    norm: str = "batch"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        _check_range("model.depth", self.depth, 1, 8)
        _check_range("model.num_classes", self.num_classes, 1, 255)
        _check_range("model.in_channels", self.in_channels, 1, 64)
        _check_range("model.dropout", self.dropout, 0.0, 0.9)
        _check_choice("model.upsample", self.upsample, UPSAMPLE_TYPES)
        _check_choice("model.norm", self.norm, NORM_TYPES)
        if self.channels is not None and len(self.channels) != self.depth:
            raise ValueError(
                f"model.channels has {len(self.channels)} entries {list(self.channels)}; "
                f"expected one per level, i.e. depth={self.depth} entries"
            )
        if self.base_channels < 1 or self.max_channels < self.base_channels:
            raise ValueError(
                f"model.base_channels={self.base_channels}, max_channels={self.max_channels}; "
                "expected 1 <= base_channels <= max_channels"
            )
        if any(c < 1 for c in self.level_channels()):
            raise ValueError(f"model.channels {list(self.level_channels())} must all be >= 1")

    def level_channels(self) -> tuple[int, ...]:
        """Channels of each encoder level, derived nnU-Net style unless given explicitly."""
        if self.channels is not None:
            return self.channels
        return tuple(min(self.max_channels, self.base_channels * 2**i) for i in range(self.depth))

    @property
    def size_divisor(self) -> int:
        """Input sides must be a multiple of this for the pooling pyramid to line up."""
        return 2 ** (self.depth - 1)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from. `root=None` means the embedded procedural dataset.

    `class_names`: one name per class (None: ROOT/classes.txt or ROOT/dataset.toml's classes, else the indices).
    `scale`: resize factor in (0, 1] applied to images and labels at decode (aspect kept)."""

    root: str | None = None
    num_classes: int = 10
    class_names: tuple[str, ...] | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    synth_seed: int = 0
    synth_train: int = 400
    synth_val: int = 100
    scale: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float) or not 0 < self.scale <= 1:
            raise ValueError(f"data.scale={self.scale!r} is out of range; expected 0 < data.scale <= 1 "
                             "(a resize factor: 0.5 halves each side)")
        object.__setattr__(self, "scale", float(self.scale))
        if self.class_names is None:
            return
        names = tuple(str(n) for n in self.class_names)
        object.__setattr__(self, "class_names", names)
        if len(names) != self.num_classes:
            raise ValueError(f"data.class_names has {len(names)} names but data.num_classes={self.num_classes}; "
                             "expected one name per class")
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ValueError(f"data.class_names {list(names)}: expected distinct, non-empty names")


@dataclass(frozen=True)
class TransformConfig:
    """Train/eval preprocessing. `resize` is (H, W) or None to keep each image's own size."""

    resize: tuple[int, int] | None = None
    crop_mode: str = "random"
    crop_size: int = 64
    scale_min: float = 1.0
    scale_max: float = 1.0
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 0.0
    color_jitter: float = 0.0
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.resize is not None:
            object.__setattr__(self, "resize", tuple(int(v) for v in self.resize))
            if len(self.resize) != 2:
                raise ValueError(f"transforms.resize={list(self.resize)}; expected [height, width]")
        _check_choice("transforms.crop_mode", self.crop_mode, CROP_MODES)
        _check_range("transforms.crop_size", self.crop_size, 8, 4096)
        _check_range("transforms.hflip", self.hflip, 0.0, 1.0)
        _check_range("transforms.vflip", self.vflip, 0.0, 1.0)
        _check_range("transforms.rotation", self.rotation, 0.0, 180.0)
        _check_range("transforms.color_jitter", self.color_jitter, 0.0, 1.0)
        if not (0.1 <= self.scale_min <= self.scale_max <= 4.0):
            raise ValueError(
                f"transforms.scale_min={self.scale_min}, scale_max={self.scale_max}; "
                "expected 0.1 <= scale_min <= scale_max <= 4"
            )
        if self.crop_mode == "five" and self.resize is None:
            raise ValueError("transforms.crop_mode='five' needs transforms.resize (the report resized first)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and runtime. `device='auto'` picks CUDA when there is one."""

    epochs: int = 10
    batch_size: int = 16
    loss: str = "ce"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: str = "none"
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    early_stopping: int = 0
    grad_clip: float = 0.0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    num_workers: int = 0
    seed: int = 0
    eval_batch_size: int = 8
    eval_max_pixels: int = 0  # validation/prediction: larger inputs run in tiles (0: automatic, see seg.sliding)

    def __post_init__(self) -> None:
        _check_range("train.eval_max_pixels", self.eval_max_pixels, 0, 2**40)
        _check_choice("train.loss", self.loss, LOSSES)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.scheduler", self.scheduler, SCHEDULERS)
        _check_range("train.epochs", self.epochs, 1, 100_000)
        _check_range("train.batch_size", self.batch_size, 1, 4096)
        _check_range("train.lr", self.lr, 1e-8, 10.0)
        _check_range("train.weight_decay", self.weight_decay, 0.0, 1.0)
        _check_range("train.momentum", self.momentum, 0.0, 0.999)
        _check_range("train.grad_clip", self.grad_clip, 0.0, 1e6)


@dataclass(frozen=True)
class Config:
    """Everything one training run needs; the unit that is sampled, logged and checkpointed."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.num_classes != self.data.num_classes:
            raise ValueError(
                f"model.num_classes={self.model.num_classes} but data.num_classes={self.data.num_classes}; "
                "expected them to agree"
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples become lists) for JSON, TOML and checkpoints."""
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in _SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> Config:
        """Build from nested plain data; unknown sections or keys are errors naming `source`."""
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; expected {list(_SECTIONS)}")
        parts = {name: _build_section(kind, data.get(name, {}), f"{source} [{name}]")
                 for name, kind in _SECTIONS.items()}
        try:
            return cls(**parts)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    def flatten(self) -> dict[str, Any]:
        """`{"model.depth": 4, ...}`: one entry per leaf, for MLflow params."""
        return {f"{section}.{key}": value
                for section, values in self.to_dict().items() for key, value in values.items()}

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """Copy with some keys of some sections changed, e.g. `cfg.replace(train={"epochs": 2})`."""
        data = self.to_dict()
        for name, updates in sections.items():
            data.setdefault(name, {}).update(updates)
        return Config.from_dict(data)


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "transforms": TransformConfig,
    "train": TrainConfig,
}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _build_section(kind: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a table of keys, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(names)}")
    try:
        return kind(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def load_config(path: str | Path) -> Config:
    """Read a TOML config file; errors name the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from err
    return Config.from_dict(data, source=str(path))
