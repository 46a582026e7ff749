"""A lease for trials on Optuna's journal storage, which has no heartbeat of its own.

The storage implements Optuna's heartbeat interface, so `study.optimize` drives it exactly as it
drives `RDBStorage(heartbeat_interval=...)`: a thread renews the running trial's lease (a system
attr holding the wall-clock time) every `heartbeat_interval` seconds, and before each new trial
`fail_stale_trials` fails every RUNNING trial whose lease is older than `grace_period` and hands
it to the stale-trial callback. The journal's own replay makes the FAIL atomic: when two workers
see the same stale trial, only one wins, and only that one runs the callback.

Leases compare wall clocks: on several machines, keep their clocks in sync (NTP) and the grace
period well above any skew.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import (
    BaseHeartbeat,  # the interface optimize() checks for
)
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState

LEASE_ATTR = "lease_renewed_at"

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class LeasedJournalStorage(JournalStorage, BaseHeartbeat):
    def __init__(self, backend: BaseJournalBackend, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback: StaleCallback | None = None) -> None:
        if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
            raise ValueError(f"heartbeat interval {heartbeat_interval} s and grace period {grace_period} s: "
                             "expected an interval >= 1 s and a grace period longer than the interval")
        super().__init__(backend)
        self._interval = heartbeat_interval
        self._grace = grace_period
        self._stale_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, LEASE_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - last_renewal(t) > self._grace]

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._stale_callback


def last_renewal(trial: FrozenTrial) -> float:
    """When the trial's lease was last renewed (its start if it never was)."""
    renewed = trial.system_attrs.get(LEASE_ATTR)
    if renewed is not None:
        return float(renewed)
    return trial.datetime_start.timestamp() if trial.datetime_start else time.time()
