"""One trial's MLflow run, from start to end, tolerant of a tracking store that goes away.

The run is a child of the study's parent run, named `trial-007` while it runs and renamed
`trial-007-complete|pruned|failed` when it ends, with the status that matches the trial's state.
It has the study's dataset among its inputs and, while it runs, MLflow's system metrics monitor; a
completed trial's model is a LoggedModel whose metrics are its best epoch's.
Once the store stops answering (after MLflow's bounded retries), logging stops for the rest of
the process (`StudyTracking.error` is set), training goes on, and the runner stops the study.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import DatasetInput

from search.tracking.artifacts import log_trial_artifacts
from search.tracking.client import (
    RUN_ID_ATTR,
    RUN_URL_ATTR,
    Tracker,
    TrackingUnavailable,
    trial_run_name,
    ui_url,
)
from search.tracking.epoch_metrics import epoch_metrics
from search.tracking.pyfunc import input_example, log_pyfunc_model
from search.tracking.system_metrics import start_monitor, stop_monitor
from seg.config import Config
from seg.data import SegmentationData
from seg.train import EpochResult, FitResult, save_result


@dataclass
class StudyTracking:
    """The MLflow side that every trial of one process shares."""

    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    run_tags: dict[str, str]
    datasets: list[DatasetInput] = field(default_factory=list)  # the study's dataset, per split
    validation: tuple[str, str] | None = None  # the validation split's (name, digest), for the model's metrics
    system_metrics_s: float = 0.0  # seconds between system metrics samples; 0: off
    error: str | None = None  # set when the tracking store stopped answering


class TrialRun:
    """The trial's run: `start`, log, `end`. No call raises when the store is gone, except `start`."""

    def __init__(self, shared: StudyTracking, trial: optuna.Trial) -> None:
        self.shared, self.trial = shared, trial
        self.run_id: str | None = None
        self.monitor: Any = None  # the run's SystemMetricsMonitor while it runs
        self.monitor_cpu_s = 0.0  # CPU seconds its sampling thread used, once stopped
        self.epochs: dict[int, tuple[int, dict[str, float]]] = {}  # epoch -> (timestamp, metrics) as logged

    def start(self) -> None:
        """Open the run and link it to the trial; raises TrackingUnavailable when the store is gone."""
        shared, trial = self.shared, self.trial
        if shared.error is None:
            try:
                self.run_id = shared.tracker.start_run(
                    shared.experiment_id, f"trial-{trial.number:03d}",
                    {**shared.run_tags, "trial_number": trial.number, "trial_state": "RUNNING"},
                    parent_id=shared.parent_run_id)
                trial.set_user_attr(RUN_ID_ATTR, self.run_id)
                url = ui_url(shared.tracker.tracking_uri, shared.experiment_id, self.run_id)
                if url:
                    trial.set_user_attr(RUN_URL_ATTR, url)
                if "worker" in shared.run_tags:
                    trial.set_user_attr("worker", int(shared.run_tags["worker"]))
                if shared.datasets:
                    shared.tracker.log_inputs(self.run_id, shared.datasets)
                self.monitor = start_monitor(shared.tracker.tracking_uri, self.run_id, shared.system_metrics_s)
                return
            except TrackingUnavailable as err:
                shared.error = str(err)
        trial.set_user_attr("tracking_error", shared.error)
        raise TrackingUnavailable(shared.error)

    def log_config(self, cfg: Config, study_name: str) -> None:
        """The resolved config: flattened as params, whole as `config.json`."""
        self._call(self.shared.tracker.log_params, self.run_id, {**cfg.flatten(), **self._ids(study_name)})
        self._call(self.shared.tracker.log_dict, self.run_id, cfg.to_dict(), "config.json")

    def log_sampled(self, study_name: str) -> None:
        """A rejected config has no resolved form; log what was sampled so the run shows why."""
        self._call(self.shared.tracker.log_params, self.run_id, {**self.trial.params, **self._ids(study_name)})

    def log_epoch(self, record: EpochResult, class_names: tuple[str, ...]) -> None:
        """One batched call per epoch; MLflow's step is the 0-based epoch."""
        metrics = epoch_metrics(record, class_names)
        stamp = self._call(self.shared.tracker.log_metrics, self.run_id, metrics, step=record.epoch)
        if stamp is not None:
            self.epochs[record.epoch] = (stamp, metrics)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Metrics outside the epoch's batch (the plan's predicted epoch seconds, at step 0)."""
        self._call(self.shared.tracker.log_metrics, self.run_id, metrics, step=step)

    def log_artifacts(self, cfg: Config, result: FitResult, data: SegmentationData,
                      class_names: tuple[str, ...]) -> str | None:
        """Checkpoint, figures and the pyfunc model of a completed trial; returns the model's id."""
        if self.shared.error is not None:
            return None
        shared, best = self.shared, result.best_epoch
        with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
            ckpt = save_result(Path(tmp) / "best.pt", cfg, result, class_names)
            self._call(log_trial_artifacts, shared.tracker, self.run_id, ckpt, data, result)
            tags = {**self._ids(shared.run_tags.get("study_name", "")), "best_epoch": best}
            model_id = self._call(log_pyfunc_model, shared.tracker, shared.experiment_id, self.run_id, ckpt,
                                  input_example(data), cfg.flatten(), tags, step=best)
        if model_id and best in self.epochs:  # the best epoch's points, as already logged, become the model's
            stamp, metrics = self.epochs[best]
            self._call(shared.tracker.log_metrics, self.run_id, metrics, step=best, timestamp=stamp,
                       model_id=model_id, dataset=shared.validation)
        return model_id

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._call(self.shared.tracker.set_tags, self.run_id, tags)

    def end(self, state: str, reason: str | None = None, status: str | None = None) -> None:
        """End the run with the trial's state (status KILLED/FAILED for a FAIL may be given)."""
        trial = self.trial
        if self.shared.error is not None:
            trial.set_user_attr("tracking_error", self.shared.error)
        detail = trial.user_attrs.get("fail_detail") if state == "FAIL" else None
        if detail:
            self.set_tags({"fail_detail": detail})
        self.monitor_cpu_s += stop_monitor(self.monitor, store_alive=self.shared.error is None)
        self.monitor = None
        self._call(self.shared.tracker.end_run, self.run_id, state, reason=reason,
                   name=trial_run_name(trial.number, state), status=status)

    def _ids(self, study_name: str) -> dict[str, Any]:
        return {"trial_number": self.trial.number, "study_name": study_name}

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the tracker unless it already failed; a failure stops MLflow logging, never the training."""
        if self.shared.error is not None or self.run_id is None:
            return None
        try:
            return method(*args, **kwargs)
        except TrackingUnavailable as err:
            self.shared.error = str(err)
            return None
