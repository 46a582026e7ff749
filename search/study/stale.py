"""What happens to a trial whose worker died (kill -9, a lost machine): its heartbeat or lease went stale.

Optuna has already marked it FAIL (only one worker wins that). This callback then
- ends its orphaned MLflow run as KILLED, renamed `trial-007-stale`, with the reason as a tag;
- retries it once: a WAITING trial with the same params, which the next free worker picks up.
  The retry carries `retry_of` in its user attrs and Optuna's own retry history in its system
  attrs, so `RetryHeartbeatStaleTrialCallback.retried_trial_number` works on it.

The retry is *claimed* by the process that made it (`retry_claimed_by`, until
`retry_claimed_until`, one grace period later): once the study's trial budget is met, only that
process may start a trial for it (`search.study.quota`), so a retry never lets several machines
each start one. If the claimant stops before it runs the retry, the claim expires and one other
process takes it over (`take_over_retry`: Optuna's atomic pop decides which one).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
import warnings
from functools import cache

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study.lease import last_renewal
from search.tracking.client import RUN_ID_ATTR, Tracker, TrackingUnavailable, trial_run_name

RETRY_OF_ATTR = "retry_of"
CLAIMED_BY_ATTR = "retry_claimed_by"
CLAIMED_UNTIL_ATTR = "retry_claimed_until"


@cache
def process_token() -> str:
    """This process, unique across machines and containers: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def add_retry(study: optuna.Study, failed: FrozenTrial, owner: str, claim_s: float,
              user_attrs: dict | None = None) -> None:
    """A WAITING retry of `failed` (same params), claimed by `owner` for `claim_s` seconds."""
    history = list(failed.system_attrs.get("retry_history", []))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        user_attrs={**(user_attrs or {}), CLAIMED_BY_ATTR: owner, CLAIMED_UNTIL_ATTR: time.time() + claim_s},
        system_attrs={"failed_trial": failed.system_attrs.get("failed_trial", failed.number),
                      "retry_history": [*history, failed.number]}))


def take_over_retry(study: optuna.Study, retry: FrozenTrial, owner: str, claim_s: float) -> bool:
    """Fail a WAITING retry whose claim expired and add it again claimed by `owner`; True when this
    process won (the storage lets exactly one process pop a WAITING trial, as in Optuna's own ask)."""
    # No public handle on a study's storage; Optuna's fail_stale_trials uses the same one. Popping it
    # first (WAITING -> RUNNING lets exactly one process through, as in Optuna's ask) means a retry that
    # a worker's ask popped meanwhile is never failed under it.
    storage = study._storage
    try:
        if not storage.set_trial_state_values(retry._trial_id, state=TrialState.RUNNING):
            return False  # another process took it over, or a worker started it after all
        storage.set_trial_state_values(retry._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    add_retry(study, retry, owner, claim_s,
              {k: v for k, v in retry.user_attrs.items() if k not in (CLAIMED_BY_ATTR, CLAIMED_UNTIL_ATTR)})
    return True


class StaleTrialHandler:
    def __init__(self, tracking_uri: str, grace_period: int, max_retry: int = 1, owner: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.owner = owner or process_token()  # who claims the retries this handler makes

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        silent_s = round(time.time() - last_renewal(trial), 1)
        reason = f"stale: its worker stopped renewing its heartbeat (silent {silent_s} s > grace {self.grace_period} s)"
        self._kill_run(trial, reason)
        history = list(trial.system_attrs.get("retry_history", []))
        if len(history) >= self.max_retry:
            return
        add_retry(study, trial, self.owner, self.grace_period,
                  {RETRY_OF_ATTR: trial.number, "stale_detected_after_s": silent_s})

    def _kill_run(self, trial: FrozenTrial, reason: str) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            return
        try:
            Tracker(self.tracking_uri).end_run(run_id, "FAIL", reason=reason,
                                               name=trial_run_name(trial.number, "stale"),
                                               status="KILLED")
        except TrackingUnavailable as err:  # the retry matters more; the run is reconciled on the next start
            warnings.warn(f"trial {trial.number} is stale but its MLflow run {run_id} could not be ended: {err}",
                          stacklevel=2)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the stale trials that were retried (their retry stands in for them)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def reconcile_orphaned_runs(tracker: Tracker, experiment_id: str, trials: list[FrozenTrial]) -> list[str]:
    """End the MLflow runs left RUNNING by trials that have finished (a worker killed before it could
    end its run, a tracking server that was down): each gets the status of its trial's state."""
    finished = {t.user_attrs.get(RUN_ID_ATTR): t for t in trials if t.state.is_finished()}
    fixed = []
    for run_id in tracker.running_run_ids(experiment_id):
        trial = finished.get(run_id)
        if trial is None:
            continue
        state = trial.state.name
        orphaned = "orphaned: its worker ended first" if state == "FAIL" else None
        reason = trial.user_attrs.get("fail_reason") or orphaned
        tracker.end_run(run_id, state, reason=reason, name=trial_run_name(trial.number, state),
                        status="KILLED" if state == "FAIL" else None)
        fixed.append(run_id)
    return fixed
