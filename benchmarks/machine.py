"""Which machine a benchmark ran on: CPU model, cores, threads, GPU name, library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())


def machine_info(device: str) -> dict[str, Any]:
    import mlflow
    import optuna
    import torch

    cuda = torch.cuda.is_available()
    return {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "cuda_available": cuda,
            "device_requested": device, "python": platform.python_version(), "torch": torch.__version__,
            "optuna": optuna.__version__, "mlflow": mlflow.__version__, "platform": platform.platform(),
            # Settings that change what is measured: the data path and the thread pools.
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ}}


ENV_KEYS = ("SEG_DEVICE_DATA", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
