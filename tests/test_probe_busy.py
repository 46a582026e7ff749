"""The plan's CPU probes notice a busy machine: their process's CPU seconds beside their wall seconds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from search.plan import device_probe
from search.plan.busy_cpu import BUSY_SHARE, busy_warning, usable_threads
from search.plan.capacity import Sizing, probe_config
from search.plan.device_probe import BUSY_RETIMES, StepCost, device_spec


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


def _fake_probe(busy_tries: int, calls: list[int]):
    """A `_measure_with_cpu` whose first `busy_tries` probes got a tenth of their threads' time, as beside
    another process, and read slow (9 s); later probes got all of it and read fast (1 s)."""
    def measure(cfg, hw, device, timed_s):
        calls.append(1)
        threads = usable_threads()
        if len(calls) <= busy_tries:
            return (9.0, 9.0), 2.0, 0.1 * 2.0 * threads
        return (1.0, 1.0), 2.0, 0.98 * 2.0 * threads

    return measure


@pytest.mark.parametrize("busy_tries", [1, 2])
def test_a_probe_slowed_by_another_process_is_timed_again_and_the_quiet_try_kept(monkeypatch, busy_tries):
    calls: list[int] = []
    monkeypatch.setattr(device_probe, "_measure_with_cpu", _fake_probe(busy_tries, calls))
    cost = StepCost(device_spec("cpu"), budget_s=90.0)
    cfg = probe_config(Sizing(num_classes=3, samples=16, val_images=4), 2, 8, 16, 8, "cpu")
    assert cost.seconds_per_image(cfg, (32, 32)) == 1.0 and cost.eval_seconds_per_mpixel(cfg, (32, 32)) == 1.0
    assert len(calls) == busy_tries + 1 and cost.retimed == 1
    # judged on the kept try, not the busy ones
    assert cost.cpu_share() >= BUSY_SHARE and busy_warning(cost.cpu_share(), usable_threads()) is None


def test_a_machine_busy_for_good_costs_one_probe_its_retries_and_the_plan_warns(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(device_probe, "_measure_with_cpu", _fake_probe(10**6, calls))
    cost = StepCost(device_spec("cpu"), budget_s=90.0)
    sizing = Sizing(num_classes=3, samples=16, val_images=4)
    assert cost.seconds_per_image(probe_config(sizing, 2, 8, 16, 8, "cpu"), (32, 32)) == 9.0
    assert len(calls) == 1 + BUSY_RETIMES
    cost.seconds_per_image(probe_config(sizing, 3, 8, 32, 8, "cpu"), (32, 32))
    assert len(calls) == 2 + BUSY_RETIMES  # timed once: the retries are given up
    assert cost.cpu_share() < BUSY_SHARE and "busy" in busy_warning(cost.cpu_share(), usable_threads())


def test_a_quiet_probe_is_timed_once(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(device_probe, "_measure_with_cpu", _fake_probe(0, calls))
    cost = StepCost(device_spec("cpu"), budget_s=90.0)
    cost.seconds_per_image(probe_config(Sizing(num_classes=3, samples=16, val_images=4), 2, 8, 16, 8, "cpu"), (32, 32))
    assert len(calls) == 1 and cost.retimed == 0
