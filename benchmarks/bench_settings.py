"""What the benchmark measures at full size and in `--tiny` mode: configs, sizes and step counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg.config import Config

# The seed report's UNet: channels [32..1024], 31,100,810 parameters.
REPORT_MODEL = {"depth": 6, "base_channels": 32, "max_channels": 1024}
# A default-study configuration near the middle of its space (what a typical minimum-rung trial trains).
STUDY_MODEL = {"depth": 4, "base_channels": 16, "max_channels": 128, "upsample": "transpose"}
STUDY_TRAIN = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 16, "scheduler": "none"}
STUDY_TRANSFORMS = {"crop_mode": "random", "crop_size": 64, "hflip": 0.5, "rotation": 7.5, "scale_min": 0.9,
                    "scale_max": 1.1, "color_jitter": 0.1}
TINY_MODEL = {"depth": 2, "base_channels": 4, "max_channels": 8, "upsample": "transpose"}
TINY_DATA = {"synth_train": 16, "synth_val": 6}
SECTIONS = ("overhead", "pipeline", "speed", "fixed_cost", "concurrency", "pruning")


@dataclass
class Sizes:
    """Every size knob of one benchmark run (full or tiny); the CLI may override some."""

    tiny: bool
    device: str = "auto"
    study_model: dict[str, Any] = field(default_factory=lambda: dict(STUDY_MODEL))
    data: dict[str, Any] = field(default_factory=dict)
    batch: int = 16
    crop: int = 64
    overhead_epochs: int = 3
    overhead_repeats: int = 2
    pipeline_batches: int = 25
    step_steps: int = 10
    speed_model: dict[str, Any] = field(default_factory=lambda: dict(REPORT_MODEL))
    speed_size: int = 256
    speed_batch: int = 16
    speed_steps: int = 20
    speed_cpu_steps: int = 2
    speed_cpu_variants: bool = False
    concurrency: tuple[int, ...] = (1, 2, 4)
    concurrency_steps: int = 20
    pruning_study: str = "default"
    pruning_trials: int | None = 12  # None: no trial limit (with an epoch budget)
    pruning_epochs: int = 9
    pruning_total_epochs: int | None = None  # stop each study at this epoch budget (equal-budget comparison)
    # No pruner first: every later run's ratios need it, and a cut-short run keeps usable pairs.
    pruners: tuple[str, ...] = ("none", "sha", "hyperband", "median")
    seeds: tuple[int, ...] = (0, 1, 2)

    def study_config(self, epochs: int) -> Config:
        """The default-study-like config (or the tiny one) that overhead, pipeline and fixed cost train."""
        train = {**STUDY_TRAIN, "batch_size": self.batch, "epochs": epochs, "device": self.device}
        return Config().replace(model=self.study_model, data=self.data, train=train,
                                transforms={**STUDY_TRANSFORMS, "crop_size": self.crop})

    def speed_config(self) -> Config:
        return Config().replace(model=self.speed_model, train={"batch_size": self.speed_batch, "device": self.device},
                                transforms={"crop_size": self.speed_size})


def tiny_sizes(device: str) -> Sizes:
    """Seconds-scale sizes for the test suite: tiny model and data, 1-2 steps or epochs, 2 trials, 1 seed."""
    return Sizes(tiny=True, device=device, study_model=dict(TINY_MODEL), data=dict(TINY_DATA), batch=4, crop=32,
                 overhead_epochs=1, overhead_repeats=1, pipeline_batches=2, step_steps=2, speed_model=dict(TINY_MODEL),
                 speed_size=32, speed_batch=2, speed_steps=2, speed_cpu_steps=1, speed_cpu_variants=True,
                 concurrency=(1, 2), concurrency_steps=2, pruning_study="", pruning_trials=2, pruning_epochs=2,
                 seeds=(0,))


def fixed_study_toml(cfg: Config, name: str, pruner: str = "median") -> str:
    """A study file whose space fixes every model/train/transform value of `cfg` (one config, any trial)."""
    lines = [f'[study]\nname = "{name}"\nmetric = "val_miou"\ndirection = "maximize"\n', "[data]"]
    lines += [f"{k} = {_toml(v)}" for k, v in _data_items(cfg)]
    lines += [f"\n[budget]\ntrials = 1\nmax_epochs = {cfg.train.epochs}\n", '[sampler]\nname = "random"\n',
              f'[pruner]\nname = "{pruner}"\n']
    model = {k: v for k, v in cfg.to_dict()["model"].items() if k in ("depth", "base_channels", "max_channels",
                                                                        "upsample", "norm", "dropout")}
    train = {k: v for k, v in cfg.to_dict()["train"].items() if k in ("batch_size", "optimizer", "lr", "weight_decay",
                                                                        "scheduler", "eval_batch_size", "amp",
                                                                        "channels_last", "compile")}
    transforms = {k: v for k, v in cfg.to_dict()["transforms"].items() if k in ("crop_mode", "crop_size", "hflip",
                                                                                 "vflip", "rotation", "color_jitter",
                                                                                 "scale_min", "scale_max")}
    for section, values in (("model", model), ("train", train), ("transforms", transforms)):
        lines.append(f"[space.{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def tiny_pruning_toml() -> str:
    """A two-dimension tiny study for the pruning section in tiny mode."""
    return (f'[study]\nname = "bench-tiny"\n\n[data]\nnum_classes = 10\nsynth_train = {TINY_DATA["synth_train"]}\n'
            f'synth_val = {TINY_DATA["synth_val"]}\n\n[budget]\ntrials = 2\nmax_epochs = 2\n\n'
            '[sampler]\nname = "tpe"\n\n'
            '[pruner]\nname = "sha"\n\n[space.model]\ndepth = 2\nbase_channels = 4\nmax_channels = 8\n\n'
            '[space.train]\nlr = { low = 1e-3, high = 1e-2, log = true }\nbatch_size = 4\n\n'
            '[space.transforms]\ncrop_size = 32\nhflip = { choices = [0.0, 0.5] }\n')


def write_study(text: str, folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.toml"
    path.write_text(text)
    return path


def _data_items(cfg: Config) -> list[tuple[str, Any]]:
    d = cfg.to_dict()["data"]
    return [(k, v) for k, v in d.items() if v is not None]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)

