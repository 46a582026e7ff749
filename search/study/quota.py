"""How many trials a run adds, counted across all of its workers.

`--trials 50` means 50 trials that count, in total: COMPLETE, PRUNED and FAIL trials, plus the
RUNNING and WAITING ones that will become one of those. A stale trial that was retried does not
count (its retry does), so a killed worker costs no slot.

Before each trial a worker *claims* a slot: under a file lock shared by the workers of this
machine it fails stale trials, counts, and keeps the lock until its new trial exists in the
storage (`release` at the start of the objective), so two workers can never both take the last
slot. When the target is reached but trials are still RUNNING, the worker waits for them (a
stale one is failed and retried, and the retry is run) instead of leaving them behind. Workers on
other machines do not share the lock; pass them the same `--total-trials` and the total may
overshoot by at most one trial per extra machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from search.study.stale import retried_numbers


def counted_trials(trials: list[FrozenTrial]) -> int:
    retried = retried_numbers(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def lock_path_for(storage_url: str, study_name: str) -> Path:
    """One lock file per (storage, study) on this machine; beside a journal file, else in the temp dir."""
    if "://" not in storage_url:
        return Path(f"{storage_url}.{study_name}.slots.lock")
    digest = hashlib.sha1(f"{storage_url}|{study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"unet-search-slots-{digest}.lock"


class TrialQuota:
    def __init__(self, study: optuna.Study, target: int, lock_path: Path, poll_s: float = 1.0,
                 wait_for_running: bool = True) -> None:
        self.study = study
        self.target = target
        self.lock_path = lock_path
        self.poll_s = poll_s
        # Without a heartbeat a dead worker's RUNNING trial never ends: waiting for it would hang.
        self.wait_for_running = wait_for_running
        self._fd: int | None = None

    def claim(self) -> bool:
        """True (holding the lock) when a trial may start; False once the target is met and nothing runs."""
        while True:
            self._lock()
            fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if counted_trials(trials) < self.target or any(t.state == TrialState.WAITING for t in trials):
                return True
            self.release()
            if not self.wait_for_running or not any(t.state == TrialState.RUNNING for t in trials):
                return False
            time.sleep(self.poll_s)  # another worker's trial is still running (or about to go stale)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: claim the next slot, or stop this worker."""
        if not self.claim():
            study.stop()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _lock(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
