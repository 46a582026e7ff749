"""`search.run --workers N`: N worker processes on one study, on this machine.

Each worker is `python -m search.run` itself with `--worker-index i` and the run's resolved budget
(`--target-total`, the trials the study should hold, and `--total-epochs`), so a worker is exactly
what a user starts by hand on another machine. The parent has already
created both schemas, the study and its parent run; it only starts, watches and stops workers:
- GPUs are shared round-robin through `CUDA_VISIBLE_DEVICES` (several workers per GPU are fine);
  on CPU each worker gets an equal share of the cores (`OMP_NUM_THREADS`);
- each worker derives its own sampler seed from `--seed` and its index (`derive_seed`);
- Ctrl-C or SIGTERM to the parent is forwarded to every worker (they run in their own sessions, so
  a terminal's Ctrl-C reaches them once, through the parent). Each worker fails its trial in
  progress and kills its run, and the parent waits for them all.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

WORKER_FLAGS_WITH_VALUE = ("--workers", "--trials", "--total-trials", "--total-epochs", "--worker-index",
                           "--target-total", "--timeout")
STOP_GRACE_S = 120.0  # a worker finishing its clean-up (MLflow calls with retries) before it is killed


def derive_seed(seed: int, worker_index: int) -> int:
    """Worker 0 keeps the run's seed (one worker behaves like no workers); others get distinct seeds."""
    if worker_index == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{worker_index}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def worker_argv(argv: list[str], index: int, target: int | None, total_epochs: int | None = None,
                timeout: float | None = None) -> list[str]:
    """The run's own arguments, minus the ones the parent decides, plus the worker's index and budget
    (`timeout`: what is left of the parent's, whose planning already used some)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in WORKER_FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith(tuple(f"{flag}=" for flag in WORKER_FLAGS_WITH_VALUE)):
            continue
        kept.append(arg)
    budget = ["--target-total", str(target)] if target is not None else []
    budget += ["--total-epochs", str(total_epochs)] if total_epochs is not None else []
    budget += ["--timeout", f"{timeout:.1f}"] if timeout is not None else []
    return [sys.executable, "-m", "search.run", *kept, "--worker-index", str(index), *budget]


def visible_gpus(device: str) -> list[str]:
    """GPU ids to share round-robin; none when the run is on CPU or pinned to one device."""
    if device not in ("auto", "cuda"):
        return []
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d.strip() for d in listed.split(",") if d.strip()] if listed else [str(i) for i in range(count)]


def core_share(processes: int) -> int:
    """Threads for each of `processes` CPU processes running at once: an equal share of the cores, at least 1."""
    return max(1, (os.cpu_count() or 1) // processes)


def worker_env(index: int, workers: int, gpus: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    else:
        env.setdefault("OMP_NUM_THREADS", str(core_share(workers)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class WorkerPool:
    procs: list[subprocess.Popen]

    @classmethod
    def start(cls, argv: list[str], workers: int, target: int | None, device: str,
              total_epochs: int | None = None, timeout: float | None = None) -> WorkerPool:
        gpus = visible_gpus(device)
        # Own sessions: a terminal's Ctrl-C reaches only the parent, which forwards exactly one SIGINT.
        procs = [subprocess.Popen(worker_argv(argv, i, target, total_epochs, timeout), env=worker_env(i, workers, gpus),
                                  start_new_session=True) for i in range(workers)]
        return cls(procs)

    def wait(self) -> list[int]:
        """Exit codes once every worker has ended (negative: killed by that signal)."""
        return [p.wait() for p in self.procs]

    def forward(self, signum: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signum)

    def stop(self, signum: int) -> list[int]:
        """Signal the workers, give them time to clean up, then kill what is left."""
        self.forward(signum)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return [p.returncode for p in self.procs]


def describe_exit(index: int, code: int) -> str:
    if code < 0:
        return f"worker {index} was killed by {signal.Signals(-code).name}"
    return f"worker {index} exited with code {code}"
