"""Whether another process shared the CPU while the plan timed its probes: this process's CPU seconds
over what its torch threads could have used in the wall seconds, and the plan's warning when that is low.

The probes keep their process's CPU seconds beside their wall seconds. When they got
less than BUSY_SHARE of what their threads could use, another process was running, the plan's
times are a busy machine's, and the plan says so (`busy_warning`). On Kvasir-SEG, planned while
the test suite ran, every probe read about 3x slower and the plan traded resolution and widths it
did not need (scale 0.25, 48 px crops, widths 8-32; on the idle machine: scale 0.375, 128 px, 8-256).
The same share is taken of each probe: one that ran beside another process is timed again, and the
quietest try is kept (`StepCost._timed_quietly`), so a few seconds of load do not skew the fit.
"""

from __future__ import annotations

import os

import torch

# The probes' CPU seconds over (wall seconds x torch threads) below which the machine was busy. Kvasir-SEG's
# plan on the 2-core machine: 0.956 idle, 0.58 beside the test suite (which made it plan 0.25 / 64 px crops).
BUSY_SHARE = 0.75


def usable_threads() -> int:
    """torch's intra-op threads, at most the cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores))


def cpu_share(cpu_s: float, wall_s: float) -> float:
    """CPU seconds over what the usable threads could have used in `wall_s` (1.0: all of it)."""
    return cpu_s / (wall_s * usable_threads()) if wall_s > 0 else 1.0


def busy_warning(share: float | None, threads: int) -> str | None:
    """A warning when the CPU probes got less than BUSY_SHARE of their threads' time (`StepCost.cpu_share`)."""
    if share is None or share >= BUSY_SHARE:
        return None
    return (f"the CPU was busy while the plan timed its probes: they got {share:.0%} of the time of their "
            f"{threads} thread(s), so another process was running (or a CPU quota holds this one to fewer "
            "cores). The plan's epoch times are this busy machine's, and it may have given up resolution or "
            "width it did not need (data.scale, crop_size, base_channels). Plan again on an idle machine, or "
            "keep this plan if the trials will share the machine the same way")
