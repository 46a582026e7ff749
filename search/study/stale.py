"""What happens to a trial whose worker died (kill -9, a lost machine): its heartbeat or lease went stale.

Optuna has already marked it FAIL (only one worker wins that). This callback then
- ends its orphaned MLflow run as KILLED, renamed `trial-007-stale`, with the reason as a tag;
- retries it once: a WAITING trial with the same params, which the next free worker picks up.
  The retry carries `retry_of` in its user attrs and Optuna's own retry history in its system
  attrs, so `RetryHeartbeatStaleTrialCallback.retried_trial_number` works on it.
"""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study.lease import last_renewal
from search.tracking.client import RUN_ID_ATTR, Tracker, TrackingUnavailable, trial_run_name

RETRY_OF_ATTR = "retry_of"


class StaleTrialHandler:
    def __init__(self, tracking_uri: str, grace_period: int, max_retry: int = 1) -> None:
        self.tracking_uri = tracking_uri
        self.grace_period = grace_period
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        silent_s = round(time.time() - last_renewal(trial), 1)
        reason = f"stale: its worker stopped renewing its heartbeat (silent {silent_s} s > grace {self.grace_period} s)"
        self._kill_run(trial, reason)
        history = list(trial.system_attrs.get("retry_history", []))
        if len(history) >= self.max_retry:
            return
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={RETRY_OF_ATTR: trial.number, "stale_detected_after_s": silent_s},
            system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                          "retry_history": [*history, trial.number]}))

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
