"""Device choice, seeding and mixed-precision settings: the runtime side of a `TrainConfig`."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from seg.config import TrainConfig


def seed_everything(seed: int) -> None:
    """The one seeding function: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when there is one, else CPU; an explicit device that is missing is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return device


@dataclass(frozen=True)
class Precision:
    """How a step runs on its device: autocast dtype (None = fp32), loss scaling and memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None
    use_scaler: bool
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def precision_for(cfg: TrainConfig, device: torch.device) -> Precision:
    """On CUDA: bf16 autocast (fp16 + GradScaler where bf16 is missing), channels_last; on CPU: fp32."""
    if device.type != "cuda":
        return Precision(device, None, False, False)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if not cfg.amp:
        return Precision(device, None, False, cfg.channels_last)
    if torch.cuda.is_bf16_supported():
        return Precision(device, torch.bfloat16, False, cfg.channels_last)
    return Precision(device, torch.float16, True, cfg.channels_last)

