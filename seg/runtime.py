"""Device choice, seeding, mixed-precision settings and the compiled-model cache: the runtime side of a
training config."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seg.config import Config, ModelConfig
from seg.model import build_unet


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX tiles, which oneDNN's convolutions
    use); elsewhere bf16 is emulated and slower than fp32. False when this torch cannot tell."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


# On a CPU, channels_last pays only when every conv has at least this many channels: BatchNorm's
# backward over fewer channels takes a slow path there. Seconds an epoch in bf16 on a 2-core AMX Xeon,
# channels_last against not (python -m benchmarks.cpu_precision; docs/performance.md): base width 12,
# 1.24x slower; 16, 1.76x faster.
CPU_CHANNELS_LAST_MIN_WIDTH = 16


def uses_channels_last(cfg: Config, device_type: str) -> bool:
    """Whether `cfg` runs channels_last on a device of this type: on CUDA when `train.channels_last`; on a
    CPU only when its narrowest level is also CPU_CHANNELS_LAST_MIN_WIDTH channels or more."""
    if not cfg.train.channels_last:
        return False
    return device_type == "cuda" or min(cfg.model.level_channels()) >= CPU_CHANNELS_LAST_MIN_WIDTH


def precision_for(cfg: Config, device: torch.device) -> Precision:
    """On CUDA: bf16 autocast (fp16 + GradScaler where bf16 is missing), channels_last. On a CPU: bf16
    autocast where the CPU has it natively (on a 2-core AMX Xeon, 1.65-2.4x the fp32 speed of the
    default study's UNets with the same val mIoU; docs/performance.md), and channels_last when the
    narrowest level has CPU_CHANNELS_LAST_MIN_WIDTH channels or more. `train.amp` and
    `train.channels_last` turn them off."""
    train, layout = cfg.train, uses_channels_last(cfg, device.type)
    if device.type != "cuda":
        bf16 = train.amp and cpu_has_native_bf16()
        return Precision(device, torch.bfloat16 if bf16 else None, False, layout)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if not train.amp:
        return Precision(device, None, False, layout)
    if torch.cuda.is_bf16_supported():
        return Precision(device, torch.bfloat16, False, layout)
    return Precision(device, torch.float16, True, layout)


# --- model and compile cache across trials ----------------------------------------------------------


@dataclass
class _CachedModel:
    key: tuple
    model: nn.Module
    compiled: nn.Module
    in_use: bool = False


class CompiledModelCache:
    """Keeps the last compiled UNet so the next trial with the same architecture skips compilation.

    A trial still gets exactly the weights a fresh `build_unet` would give for its seed: they are
    built fresh on the CPU and copied *into* the cached module's tensors (`load_state_dict` copies in
    place), so the compiled graph's guards still hold and nothing recompiles. Only one entry is kept
    (a different architecture replaces it), and an entry in use by one fit is never handed to another.
    Eager models are not cached: building and moving them is cheap next to an epoch.
    """

    def __init__(self) -> None:
        self._entry: _CachedModel | None = None
        self._lock = threading.Lock()
        self.hits = 0

    @contextlib.contextmanager
    def lease(self, cfg: ModelConfig, prec: Precision,
              compile_model: bool) -> Iterator[tuple[nn.Module, nn.Module, bool]]:
        """Yields (model, step_model, reused): step_model is the compiled wrapper when `compile_model`."""
        fresh = build_unet(cfg)  # seeded init, identical whether or not the cache hits
        if not compile_model:
            model = fresh.to(prec.device, memory_format=prec.memory_format)
            yield model, model, False
            return
        key = (cfg, str(prec.device), prec.channels_last)
        entry, reused = self._take(key)
        if entry is None:
            use_persistent_compile_cache()
            model = fresh.to(prec.device, memory_format=prec.memory_format)
            entry = _CachedModel(key, model, torch.compile(model, dynamic=False), in_use=True)
            with self._lock:
                if self._entry is None or not self._entry.in_use:
                    self._entry = entry
        else:
            entry.model.load_state_dict(fresh.state_dict())
            entry.model.train()
        try:
            yield entry.model, entry.compiled, reused
        finally:
            entry.in_use = False

    def _take(self, key: tuple) -> tuple[_CachedModel | None, bool]:
        with self._lock:
            entry = self._entry
            if entry is not None and entry.key == key and not entry.in_use:
                entry.in_use = True
                self.hits += 1
                return entry, True
        return None, False

    def clear(self) -> None:
        with self._lock:
            self._entry = None


MODEL_CACHE = CompiledModelCache()
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def use_persistent_compile_cache() -> None:
    """Point Inductor's on-disk cache (compiled kernels, FX graphs) at the project cache unless the user set one,
    so new worker processes and reruns reuse earlier compilations instead of /tmp's (cleaned) default."""
    if INDUCTOR_CACHE_ENV not in os.environ:
        base = os.environ.get("SEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "unet-search")
        os.environ[INDUCTOR_CACHE_ENV] = os.path.join(base, "inductor")
