"""Per-trial fixed cost: what a trial pays before its first useful step, against a minimum-rung trial.

Per process (paid once per worker, shared by all its trials): interpreter + imports, decoding the
cached dataset. Per trial: building the model and moving it to the device, building the loaders,
and on CUDA the torch.compile warm-up (first compiled step minus a steady one), measured both cold
and with `seg.runtime.MODEL_CACHE` reusing the compiled model. The minimum-rung trial is one epoch
(train + validation) of the default-study-like config: the shortest trial a pruner lets run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_settings import Sizes
from seg.config import Config
from seg.gpu_data import device_data_decision, device_loaders
from seg.loaders import build_loaders, resolve_dataset
from seg.model import build_unet
from seg.runtime import (
    MODEL_CACHE,
    Precision,
    precision_for,
    resolve_device,
    seed_everything,
)
from seg.train import fit, masked_cross_entropy

GOAL = 0.05
REPO_ROOT = Path(__file__).resolve().parents[1]


def fresh_process_costs(cfg: Config) -> tuple[float, float]:
    """(interpreter start + `import search.objective`, decoding the cached dataset) in one fresh process.

    The data is timed in a fresh process because this one's in-process dataset cache would make it free.
    """
    d = cfg.data
    code = ("import time; imported = time.time(); import search.objective; imported = time.time(); "
            "from seg.config import DataConfig; from seg.loaders import resolve_dataset; t = time.perf_counter(); "
            f"resolve_dataset(DataConfig(synth_train={d.synth_train}, synth_val={d.synth_val}, "
            f"num_classes={d.num_classes})); print(imported, time.perf_counter() - t)")
    launched = time.time()
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    imported, data_s = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
    return imported - launched, data_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_build_s(cfg: Config, prec: Precision) -> float:
    start = time.perf_counter()
    build_unet(cfg.model).to(prec.device, memory_format=prec.memory_format)
    _sync(prec.device)
    return time.perf_counter() - start


def loaders_build_s(cfg: Config, data: Any, device: torch.device) -> float:
    start = time.perf_counter()
    on_device, _ = device_data_decision(cfg, data, device)
    if on_device:
        device_loaders(cfg, data, device)
    else:
        build_loaders(cfg, data, pin_memory=device.type == "cuda")
    return time.perf_counter() - start


def compile_warmup_s(cfg: Config, prec: Precision) -> float:
    """First compiled step minus a steady one, for a trial taking the model from MODEL_CACHE."""
    b, s = cfg.train.batch_size, cfg.transforms.crop_size
    x = torch.randn(b, 3, s, s, device=prec.device).contiguous(memory_format=prec.memory_format)  # (B, 3, S, S)
    y = torch.randint(0, cfg.model.num_classes, (b, s, s), device=prec.device)
    with MODEL_CACHE.lease(cfg.model, prec, True) as (_, compiled, _):
        times = []
        for _ in range(3):
            _sync(prec.device)
            start = time.perf_counter()
            with prec.autocast():
                masked_cross_entropy(compiled(x), y).backward()
            _sync(prec.device)
            times.append(time.perf_counter() - start)
    return max(0.0, times[0] - min(times[1:]))


def min_rung_trial_s(cfg: Config, data: Any) -> float:
    start = time.perf_counter()
    fit(cfg, data)
    return time.perf_counter() - start


def measure(sizes: Sizes, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = sizes.study_config(1)
    device = resolve_device(cfg.train.device)
    prec = precision_for(cfg, device)
    data = resolve_dataset(cfg.data)
    seed_everything(0)
    runs = [fresh_process_costs(cfg) for _ in range(1 if sizes.tiny else 3)]
    result: dict[str, Any] = {"device": str(device), "config": cfg.flatten(), "fresh_process_repeats": len(runs),
                              "process_start_s": None, "data_load_s": None,
                              "model_build_s": round(model_build_s(cfg, prec), 4),
                              "loaders_build_s": round(loaders_build_s(cfg, data, device), 4)}
    result["process_start_s"] = round(statistics.median(r[0] for r in runs), 3)
    result["data_load_s"] = round(statistics.median(r[1] for r in runs), 3)
    if device.type == "cuda":
        MODEL_CACHE.clear()
        result["compile_warmup_cold_s"] = round(compile_warmup_s(cfg, prec), 3)
        result["compile_warmup_reused_s"] = round(compile_warmup_s(cfg, prec), 3)
        result["compile_skip_reason"] = None
    else:
        result.update(compile_warmup_cold_s=None, compile_warmup_reused_s=None,
                      compile_skip_reason="CPU: compile is a CUDA default only (train.compile); not measured")
    result["min_rung_trial_s"] = round(min_rung_trial_s(cfg, data), 3)
    per_trial = result["model_build_s"] + result["loaders_build_s"] + (result["compile_warmup_reused_s"] or 0.0)
    per_process = result["process_start_s"] + result["data_load_s"]
    rung = result["min_rung_trial_s"]
    result.update(per_trial_fixed_s=round(per_trial, 4), per_process_fixed_s=round(per_process, 3),
                  per_trial_fraction=round(per_trial / rung, 4),
                  per_trial_fraction_if_one_process_per_trial=round((per_trial + per_process) / rung, 4),
                  goal=GOAL, meets_goal=per_trial / rung < GOAL)
    result["tables"] = {"fixed cost vs a minimum-rung trial": [
        {"cost": k, "seconds": result[k],
         "fraction of min-rung trial": round(result[k] / rung, 4) if result[k] else None}
        for k in ("process_start_s", "data_load_s", "model_build_s", "loaders_build_s", "compile_warmup_cold_s",
                  "compile_warmup_reused_s", "per_trial_fixed_s", "per_process_fixed_s", "min_rung_trial_s")]}
    keep(result)
    return result
