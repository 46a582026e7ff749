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
when both are given: the first one reached stops the run.

Once the trial budget is met, a WAITING retry of a stale trial lets only one process claim a trial
for it: the one that made it, which the retry names (`search.study.stale`); when that claim
expired unused, the one process that takes the retry over. A trial enqueued by hand (the
baseline) has no claimant and lets any worker claim it. Optuna's `ask` pops whichever trial waits
first, so a process of another lock file may run the retry this one claimed for; this one's `ask`
then makes a new trial past the budget, which `start` ends at once, before it trains, as FAIL
marked `surplus` (not counted). So retries at the budget add no trial, on any number of machines.

The lock file lives beside a journal or SQLite file (`lock_path_for`), so every worker that opens
that file shares it; for a server storage (PostgreSQL) it lives in `$UNET_SEARCH_LOCK_DIR`, else
the temp dir, which SLURM and containers make per job. Workers that do not share the lock file
(other machines, other SLURM jobs) count separately: pass them the same `--total-trials` /
`--total-epochs`, and the total may overshoot by at most one trial per extra lock file (G groups
of workers: at most G - 1 extra trials), however many trials are retried.
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

from search.study.stale import CLAIMED_BY_ATTR, CLAIMED_UNTIL_ATTR, process_token, retried_numbers, take_over_retry

ALLOWANCE_ATTR = "epoch_allowance"
SURPLUS_ATTR = "surplus"  # a new trial that another process's pop of a claimed retry left past the budget
EPOCHS_ATTR = "epochs_trained"
BASELINE_ATTR = "baseline"  # the trial enqueued from the study's [baseline]
BUDGET_STOP_ATTR = "stopped_by_budget"
LOCK_DIR_ENV = "UNET_SEARCH_LOCK_DIR"  # where the lock file of a server storage lives (default: the temp dir)
TAKE_OVER_CLAIM_S = 60.0  # how long a retry taken over from a claimant that stopped stays ours


@dataclass(frozen=True)
class Budget:
    """What the study should hold when the run is done; None: no limit of that kind."""

    trials: int | None = None  # counted trials
    epochs: int | None = None  # epochs trained by all its trials

    def describe(self) -> str:
        parts = [f"it holds {self.trials} trials"] if self.trials is not None else []
        parts += [f"it has trained {self.epochs} epochs"] if self.epochs is not None else []
        return " or ".join(parts) or "it is stopped"


class SurplusTrial(Exception):
    """Raised by `StudyQuota.start` for a trial that must not train: Optuna's `catch` ends it FAIL."""


def counted_trials(trials: list[FrozenTrial]) -> int:
    retried = retried_numbers(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL
                                         and (t.number in retried or t.user_attrs.get(SURPLUS_ATTR))))


def from_queue(trial: FrozenTrial) -> bool:
    """Whether Optuna's `ask` popped this trial from the WAITING ones (a retry, an enqueued trial)
    rather than making a new one."""
    return "retry_history" in trial.system_attrs or "fixed_params" in trial.system_attrs


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


def storage_file(storage_url: str) -> Path | None:
    """The file a journal path or an `sqlite:///` URL names; None for a server or an in-memory database."""
    if "://" not in storage_url:
        return Path(storage_url)
    if not storage_url.startswith("sqlite:///"):
        return None
    path = storage_url[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def lock_path_for(storage_url: str, study_name: str) -> Path:
    """One lock file per (storage, study): beside a journal or SQLite file (every worker that opens the
    file shares it), else in `$UNET_SEARCH_LOCK_DIR` or, when that is unset, the temp dir."""
    file = storage_file(storage_url)
    if file is not None:
        return Path(f"{file}.{study_name}.slots.lock")
    digest = hashlib.sha1(f"{storage_url}|{study_name}".encode()).hexdigest()[:16]
    folder = os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir()
    return Path(folder).expanduser() / f"unet-search-slots-{digest}.lock"


def claimable_waiting(study: optuna.Study, trials: list[FrozenTrial], owner: str) -> bool:
    """Whether `owner` may claim a trial past the budget for a WAITING one: an enqueued trial (no
    claimant), a retry it claims, or a retry whose claim expired and that it takes over (only one
    process wins that)."""
    now = time.time()
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if any(t.user_attrs.get(CLAIMED_BY_ATTR) in (None, owner) for t in waiting):
        return True
    return any(now > float(t.user_attrs.get(CLAIMED_UNTIL_ATTR, 0.0))
               and take_over_retry(study, t, owner, TAKE_OVER_CLAIM_S) for t in waiting)


def claimed_elsewhere(trials: list[FrozenTrial], owner: str) -> bool:
    """Whether a WAITING retry is claimed by another process, and that claim has not expired."""
    now = time.time()
    return any(t.state == TrialState.WAITING and t.user_attrs.get(CLAIMED_BY_ATTR) not in (None, owner)
               and float(t.user_attrs.get(CLAIMED_UNTIL_ATTR, 0.0)) >= now for t in trials)


class StudyQuota:
    def __init__(self, study: optuna.Study, budget: Budget, lock_path: Path, max_epochs: int,
                 poll_s: float = 1.0, wait_for_running: bool = True, owner: str | None = None) -> None:
        self.study, self.budget, self.lock_path = study, budget, lock_path
        self.max_epochs = max_epochs
        self.owner = owner or process_token()  # the claimant a retry made by this process names
        self.poll_s = poll_s
        # Without a heartbeat a dead worker's RUNNING trial never ends: waiting for it would hang.
        self.wait_for_running = wait_for_running
        self._fd: int | None = None
        self._allowance: int | None = None
        self._past_budget = False  # the claim was for a WAITING trial, the trial budget being met

    def claim(self) -> bool:
        """True (holding the lock) when a trial may start; False once a limit is met and nothing runs."""
        while True:
            self._lock()
            fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if self._room(trials):
                return True
            self.release()
            running = any(t.state == TrialState.RUNNING for t in trials)
            if not self.wait_for_running or not (running or claimed_elsewhere(trials, self.owner)):
                return False
            # Another worker's trial is still running (or about to go stale), or another process is about
            # to run a retry it claims: if that one stopped instead, its claim expires and this one takes over.
            time.sleep(self.poll_s)

    def _room(self, trials: list[FrozenTrial]) -> bool:
        # Epochs first: a retry is only taken over (a write) when its trial may start.
        if self.budget.epochs is None:
            self._allowance = None
        else:
            left = self.budget.epochs - epochs_committed(trials, self.max_epochs)
            self._allowance = min(self.max_epochs, left)
            if left <= 0:
                return False
        self._past_budget = False
        if self.budget.trials is None or counted_trials(trials) < self.budget.trials:
            return True
        self._past_budget = claimable_waiting(self.study, trials, self.owner)
        return self._past_budget

    def start(self, trial: optuna.Trial) -> int | None:
        """The objective's first call (the trial exists now): reserve its epochs, then release the lock.

        Returns the trial's epoch allowance (None: no epoch budget). Raises SurplusTrial, the trial
        marked `surplus`, when the claim was for a WAITING trial that another process popped first
        and Optuna made this one new, past the budget."""
        try:
            if self._past_budget and self._surplus(trial.number):
                trial.set_user_attr(SURPLUS_ATTR, True)
                trial.set_user_attr("fail_reason", "surplus: another worker ran the retry this one claimed, "
                                                   "so this trial would pass the trial budget; it did not train")
                raise SurplusTrial(f"trial {trial.number} would pass the budget of {self.budget.trials} trials")
            if self._allowance is not None:
                trial.set_user_attr(ALLOWANCE_ATTR, self._allowance)
            return self._allowance
        finally:
            self.release()

    def _surplus(self, number: int) -> bool:
        trials = self.study.get_trials(deepcopy=False)
        trial = next(t for t in trials if t.number == number)
        return not from_queue(trial) and counted_trials(trials) > self.budget.trials

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
