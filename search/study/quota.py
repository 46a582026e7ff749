"""How much a run may still start, counted across all of its workers: trials, and epochs.

Trials. `--trials 50` means 50 trials that count, in total: COMPLETE, PRUNED and FAIL trials, plus
the RUNNING and WAITING ones that will become one of those. A stale trial that was retried does
not count (its retry does), so a killed worker costs no slot.

Epochs. `--total-epochs N` stops starting trials once the study's trials have trained N epochs in
all, pruned and failed ones included (a finished trial's `epochs_trained` user attr, or one per
reported epoch for a trial whose worker died). The count is read from the study, so it survives a
resume. A trial that starts reserves its *allowance*, `min(max_epochs, N - trained - reserved by
running trials)`, as its `epoch_allowance` user attr before the lock is released; a trial whose
allowance is below max_epochs stops after that many epochs, PRUNED and marked
`stopped_by_budget`. When the budget is reserved but not yet spent, workers wait for the running
trials: one that is pruned early hands its unspent epochs back, and the next trial gets them.

Before each trial a worker *claims* it: under a file lock shared by the workers of this machine it
fails stale trials, counts, and keeps the lock until its new trial exists in the storage (`start`
at the beginning of the objective), so two workers can never both take the last slot or the last
epochs. When a limit is reached but trials are still RUNNING, the worker waits for them (a stale
one is failed and retried, and the retry is run) instead of leaving them behind. Both limits apply
when both are given: the first one reached stops the run. Workers on other machines do not share
the lock; pass them the same `--total-trials` / `--total-epochs` and the total may overshoot by at
most one trial per extra machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from search.study.stale import retried_numbers

ALLOWANCE_ATTR = "epoch_allowance"
EPOCHS_ATTR = "epochs_trained"
BUDGET_STOP_ATTR = "stopped_by_budget"


@dataclass(frozen=True)
class Budget:
    """What the study should hold when the run is done; None: no limit of that kind."""

    trials: int | None = None  # counted trials
    epochs: int | None = None  # epochs trained by all its trials

    def describe(self) -> str:
        parts = [f"it holds {self.trials} trials"] if self.trials is not None else []
        parts += [f"it has trained {self.epochs} epochs"] if self.epochs is not None else []
        return " or ".join(parts) or "it is stopped"


def counted_trials(trials: list[FrozenTrial]) -> int:
    retried = retried_numbers(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def epochs_spent(trial: FrozenTrial) -> int:
    """Epochs a finished trial trained; a trial whose worker died has no attr: one per reported epoch."""
    return int(trial.user_attrs.get(EPOCHS_ATTR, len(trial.intermediate_values)))


def epochs_trained(trials: Iterable[FrozenTrial]) -> int:
    """Epochs the study's finished trials trained in all."""
    return sum(epochs_spent(t) for t in trials if t.state.is_finished())


def epochs_committed(trials: list[FrozenTrial], max_epochs: int) -> int:
    """Epochs trained by finished trials plus those reserved by running ones (max_epochs if unknown)."""
    reserved = sum(int(t.user_attrs.get(ALLOWANCE_ATTR, max_epochs)) for t in trials if t.state == TrialState.RUNNING)
    return epochs_trained(trials) + reserved


def lock_path_for(storage_url: str, study_name: str) -> Path:
    """One lock file per (storage, study) on this machine; beside a journal file, else in the temp dir."""
    if "://" not in storage_url:
        return Path(f"{storage_url}.{study_name}.slots.lock")
    digest = hashlib.sha1(f"{storage_url}|{study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"unet-search-slots-{digest}.lock"


class StudyQuota:
    def __init__(self, study: optuna.Study, budget: Budget, lock_path: Path, max_epochs: int,
                 poll_s: float = 1.0, wait_for_running: bool = True) -> None:
        self.study, self.budget, self.lock_path = study, budget, lock_path
        self.max_epochs = max_epochs
        self.poll_s = poll_s
        # Without a heartbeat a dead worker's RUNNING trial never ends: waiting for it would hang.
        self.wait_for_running = wait_for_running
        self._fd: int | None = None
        self._allowance: int | None = None

    def claim(self) -> bool:
        """True (holding the lock) when a trial may start; False once a limit is met and nothing runs."""
        while True:
            self._lock()
            fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if self._room(trials):
                return True
            self.release()
            if not self.wait_for_running or not any(t.state == TrialState.RUNNING for t in trials):
                return False
            time.sleep(self.poll_s)  # another worker's trial is still running (or about to go stale)

    def _room(self, trials: list[FrozenTrial]) -> bool:
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if self.budget.trials is not None and counted_trials(trials) >= self.budget.trials and not waiting:
            return False
        if self.budget.epochs is None:
            self._allowance = None
            return True
        left = self.budget.epochs - epochs_committed(trials, self.max_epochs)
        self._allowance = min(self.max_epochs, left)
        return left > 0

    def start(self, trial: optuna.Trial) -> int | None:
        """The objective's first call (the trial exists now): reserve its epochs, then release the lock.

        Returns the trial's epoch allowance (None: no epoch budget)."""
        try:
            if self._allowance is not None:
                trial.set_user_attr(ALLOWANCE_ATTR, self._allowance)
            return self._allowance
        finally:
            self.release()

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: claim the next trial, or stop this worker."""
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
