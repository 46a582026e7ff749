"""Concurrency: total training images/s with 1, 2 and 4 trials at once on one device.

Each trial is a separate process (`benchmarks.concurrency_worker`) training the default-study-like config on
a fixed batch for a fixed number of steps; all start timing together (a go file) and the total is
all images over the span from the first start to the last end. On a CPU each worker gets
cores // n torch threads (at least 1), so n workers never oversubscribe the cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_settings import Sizes
from search.workers import core_share
from seg.config import Config
from seg.runtime import resolve_device

REPO_ROOT = Path(__file__).resolve().parents[1]  # workers run `-m benchmarks...` from here
WORKER_TIMEOUT_S = 900


def _threads(device_type: str, n: int) -> str | None:
    return str(core_share(n)) if device_type == "cpu" else None


def run_workers(cfg: Config, n: int, steps: int) -> dict[str, Any]:
    """Start n workers, release them together, collect their figures; every worker is reaped."""
    device = resolve_device(cfg.train.device)
    threads = _threads(device.type, n)
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        go = Path(tmp) / "go"
        cmd = [sys.executable, "-m", "benchmarks.concurrency_worker", json.dumps(cfg.to_dict()), str(steps), str(go)]
        cmd += [threads] if threads else []
        procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(n)]
        try:
            for p in procs:
                line = p.stdout.readline().strip()
                if line != "ready":
                    raise RuntimeError(f"concurrency worker failed before starting: {line} {p.stderr.read()[-2000:]}")
            go.touch()
            outs = [p.communicate(timeout=WORKER_TIMEOUT_S) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"concurrency worker exited {p.returncode}: {err[-2000:]}")
    figures = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    span = max(f["end"] for f in figures) - min(f["start"] for f in figures)
    images = sum(f["images"] for f in figures)
    return {"trials": n, "threads_per_trial": int(threads) if threads else None, "images": images,
            "span_s": round(span, 3), "total_images_per_s": round(images / span, 2),
            "per_trial_images_per_s": [round(f["images"] / (f["end"] - f["start"]), 2) for f in figures]}


def measure(sizes: Sizes, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = sizes.study_config(1)
    result: dict[str, Any] = {"device": str(resolve_device(cfg.train.device)), "config": cfg.flatten(),
                              "steps_per_trial": sizes.concurrency_steps, "runs": []}
    for n in sizes.concurrency:
        result["runs"].append(run_workers(cfg, n, sizes.concurrency_steps))
        keep(result)
    one = next((r["total_images_per_s"] for r in result["runs"] if r["trials"] == 1), None)
    for r in result["runs"]:
        r["total_vs_one_trial"] = round(r["total_images_per_s"] / one, 3) if one else None
    result["tables"] = {"trials at once on one device": [
        {"trials": r["trials"], "threads each": r["threads_per_trial"], "total images/s": r["total_images_per_s"],
         "x one trial": r["total_vs_one_trial"], "per trial images/s": r["per_trial_images_per_s"]}
        for r in result["runs"]]}
    keep(result)
    return result
