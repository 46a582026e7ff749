"""How long the plan's probes time a step: after one untimed call, at least MIN_STEPS calls, then more
until MIN_TIMED_S seconds are timed or MAX_STEPS calls are made (a clock that each call advances)."""

from __future__ import annotations

import pytest
import torch

from search.plan import device_probe


@pytest.mark.parametrize(("step_s", "timed"), [
    (0.25, 8),  # slow steps: until 2 s are timed
    (0.001, device_probe.MAX_STEPS),  # quick steps: capped by the step count
    (5.0, device_probe.MIN_STEPS),  # very slow steps: still the minimum count, for a median
])
def test_probe_steps_are_timed_until_enough_seconds_or_steps(monkeypatch, step_s: float, timed: int) -> None:
    now = [0.0]
    monkeypatch.setattr(device_probe.time, "perf_counter", lambda: now[0])
    calls = []

    def step() -> None:
        calls.append(1)
        now[0] += step_s

    times = device_probe._timed(step, torch.device("cpu"))
    assert len(times) == timed and len(calls) == timed + 1  # one untimed warm-up call first
    assert times == pytest.approx([step_s] * timed)


def test_a_short_budget_times_shorter_probes() -> None:
    assert device_probe.probe_seconds(None) == device_probe.probe_seconds(3600) == device_probe.MIN_TIMED_S
    assert device_probe.probe_seconds(15) == pytest.approx(15 / device_probe.PROBE_BUDGET_SHARE)
