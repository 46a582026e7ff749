"""Checkpoints as plain data: weights plus the config, loadable with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors, numbers, strings and lists only, never pickled objects, so it
rebuilds the model without the training code (nanoGPT's `model_args` pattern):

    ckpt = torch.load(path, weights_only=True)
    model = build_unet(Config.from_dict(ckpt["config"]).model)
    model.load_state_dict(ckpt["state_dict"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seg.config import Config
from seg.data import DatasetSpec, SpecError
from seg.model import UNet, build_unet

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    config: Config
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    metrics: dict[str, Any]
    spec: DatasetSpec = field(default_factory=DatasetSpec)  # how the training labels were read (default: old files)

    def build_model(self) -> UNet:
        model = build_unet(self.config.model)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], config: Config,
                    mean: tuple[float, ...], std: tuple[float, ...], class_names: tuple[str, ...],
                    metrics: dict[str, Any] | None = None, spec: DatasetSpec | None = None) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a torn checkpoint.

    `spec` (the data's resolved `SegmentationData.spec`) is stored as plain data, so prediction and
    evaluation read label files the way training did."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model_state.items()},
        "mean": list(mean),
        "std": list(std),
        "class_names": list(class_names),
        "metrics": dict(metrics or {}),
        "dataset_spec": (spec or DatasetSpec()).to_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; weights and config must agree."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for torn or foreign files
        raise CheckpointError(f"checkpoint {path} could not be read ({type(err).__name__}: {err})") from err
    missing = {"config", "state_dict", "mean", "std"} - set(raw if isinstance(raw, dict) else {})
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}; expected a file written by seg.checkpoint")
    try:
        config = Config.from_dict(raw["config"], source=f"{path} config")
        spec = DatasetSpec.from_dict(raw.get("dataset_spec"))
    except (ValueError, TypeError, SpecError) as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from err
    ckpt = Checkpoint(config, raw["state_dict"], tuple(raw["mean"]), tuple(raw["std"]),
                      tuple(raw.get("class_names") or [str(i) for i in range(config.model.num_classes)]),
                      dict(raw.get("metrics") or {}), spec)
    _check_weights_match(path, ckpt)
    return ckpt


def _check_weights_match(path: Path, ckpt: Checkpoint) -> None:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_unet(ckpt.config.model).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:5]
        raise CheckpointError(f"checkpoint {path}: weights do not match its config's model (first differences: {diff})")
