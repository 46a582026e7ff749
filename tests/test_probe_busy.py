"""The plan's CPU probes notice a busy machine: their process's CPU seconds beside their wall seconds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from search.plan.capacity import Sizing, probe_config
from search.plan.device_probe import BUSY_SHARE, StepCost, busy_warning, device_spec, usable_threads


@pytest.mark.parametrize("share", [None, 1.0, 0.9, BUSY_SHARE])
def test_no_warning_when_the_probes_got_their_cpu(share):
    assert busy_warning(share, 2) is None


def test_the_warning_names_the_share_and_what_to_do():
    text = busy_warning(0.4, 2)
    assert "40%" in text and "2 thread(s)" in text
    assert "data.scale" in text and "idle machine" in text


def test_probes_that_share_the_cores_with_other_processes_are_called_busy():
    """Twice as many spinning processes as cores: the probe's one thread gets well under BUSY_SHARE."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 2))]
    try:
        cost = StepCost(device_spec("cpu"), budget_s=90.0)  # 0.3 s of timed steps a probe
        cfg = probe_config(Sizing(num_classes=3, samples=16, val_images=4), 2, 8, 16, 8, "cpu")
        cost.seconds_per_image(cfg, (32, 32))
        share = cost.cpu_share()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert share is not None and 0 < share < BUSY_SHARE
    assert "busy" in busy_warning(share, usable_threads())


def test_a_cuda_plan_has_no_cpu_share():
    cost = StepCost(device_spec("cuda", memory_gb=8), budget_s=90.0)
    cfg = probe_config(Sizing(num_classes=3, samples=16, val_images=4), 2, 8, 16, 8, "cuda")
    cost.seconds_per_image(cfg, (32, 32))  # estimated from FLOPs here; timed on the GPU where there is one
    assert cost.cpu_share() is None
