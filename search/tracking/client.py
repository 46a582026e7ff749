"""Our MLflow integration (not Optuna's deprecated MLflowCallback).

One parent run per study and one nested child run per trial attempt, all through `MlflowClient`
with explicit run ids (no fluent global "active run", so nothing leaks between trials).
Metrics are logged once per epoch in one `log_batch` call with `step=epoch`. Run status follows
the trial: COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED (reason in the `fail_reason` tag).
Every run this process opens is remembered until it is ended, so `close_open_runs` can end them all
on exit, on an exception or on Ctrl-C: no run is left RUNNING.
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from mlflow.entities import DatasetInput, LoggedModelOutput, LoggedModelStatus, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.guards.signals import deferred_signals

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
# The Optuna <-> MLflow links: a trial's user attr names its run, the study's names its parent run.
RUN_ID_ATTR = "mlflow_run_id"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# With a tracking server, the UI pages too: a trial's run, the study's experiment.
RUN_URL_ATTR = "mlflow_run_url"
EXPERIMENT_URL_ATTR = "mlflow_experiment_url"
# The experiment's kind, as MLflow records it when a user picks one: model training, not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# MLflow 3.17's UI takes its view (GenAI or Model training) from the page URL's `workflowType`, else
# from the browser's last choice (GenAI at first), not from the tag: every link we give carries it.
TRAINING_VIEW_QUERY = "workflowType=machine_learning"
STATUS_FOR_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED", "RUNNING": "RUNNING"}
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAMS_PER_BATCH = 100
MAX_TAG_LENGTH = 5000


# Error codes MLflow gives when the store cannot be reached or is overloaded (after its own retries).
UNAVAILABLE_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


class TrackingUnavailable(RuntimeError):
    """The tracking store (server or database) did not answer after MLflow's bounded retries."""


def _unavailable_as_error(method: Callable) -> Callable:
    """Turn a dead or slow tracking store into one clear exception type that names the URI.

    The call runs with Ctrl-C and SIGTERM held until it returns (see `search.signals`)."""
    @functools.wraps(method)
    def call(self: Tracker, *args: object, **kwargs: object) -> object:
        try:
            with deferred_signals():
                return method(self, *args, **kwargs)
        except MlflowException as err:
            if err.error_code not in UNAVAILABLE_CODES:
                raise
            raise TrackingUnavailable(f"MLflow tracking at {self.tracking_uri} is unavailable: {_short(err)}") from err
        except (requests.exceptions.RequestException, ConnectionError, TimeoutError) as err:
            raise TrackingUnavailable(f"MLflow tracking at {self.tracking_uri} is unavailable: {_short(err)}") from err
    return call


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:400]


def artifact_root_for(tracking_uri: str) -> str | None:
    """`sqlite:///mlruns/mlflow.db` keeps artifacts beside it in `mlruns/artifacts`; a server decides its own."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(tracking_uri[len("sqlite:///"):])
    return (db_path.resolve().parent / "artifacts").as_uri()


RUN_LABELS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def trial_run_name(number: int, state: str) -> str:
    """`trial-007-pruned`: the trial number and how it ended (or `stale`)."""
    return f"trial-{number:03d}-{RUN_LABELS.get(state, state.lower())}"


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None, tab: str = "") -> str | None:
    """The MLflow UI page of an experiment (or one of its runs, or a run's `tab`), in the training
    view, when the tracking URI is a server (the UI's own URL)."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return None
    page = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id:
        page += f"/runs/{run_id}" + (f"/{tab}" if tab else "")
    return f"{page}?{TRAINING_VIEW_QUERY}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Tracker:
    """Opens, logs to and ends runs; remembers the ones still open."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.open_runs: set[str] = set()

    @_unavailable_as_error
    def ping(self) -> None:
        """One cheap call: creates a SQLite store's schema, proves a server answers."""
        self.client.search_experiments(max_results=1)

    @_unavailable_as_error
    def experiment_id(self, name: str) -> str:
        """The study's experiment, created in (or, when the tag is missing, moved to) the training view."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return self.client.create_experiment(name, artifact_location=artifact_root_for(self.tracking_uri),
                                                 tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        if EXPERIMENT_KIND_TAG not in exp.tags:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return exp.experiment_id

    @_unavailable_as_error
    def start_run(self, experiment_id: str, name: str, tags: Mapping[str, str], parent_id: str | None = None) -> str:
        all_tags = {k: _tag_value(v) for k, v in tags.items()}
        if parent_id:
            all_tags[PARENT_TAG] = parent_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        self.open_runs.add(run.info.run_id)
        return run.info.run_id

    @_unavailable_as_error
    def reopen_run(self, run_id: str) -> str:
        """Resume a parent run (a resumed study keeps its one parent run)."""
        self.client.update_run(run_id, status="RUNNING")
        self.open_runs.add(run_id)
        return run_id

    @_unavailable_as_error
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i: i + MAX_PARAMS_PER_BATCH])

    @_unavailable_as_error
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int, timestamp: int | None = None,
                    model_id: str | None = None, dataset: tuple[str, str] | None = None) -> int:
        """One batched call (per epoch); returns the timestamp. With `model_id` the points also become
        the logged model's metrics (on `dataset`, a (name, digest) pair); the same timestamp as
        before adds nothing to the run's history."""
        stamp = int(time.time() * 1000) if timestamp is None else timestamp
        name, digest = dataset or (None, None)
        batch = [Metric(k, float(v), stamp, step, model_id=model_id, dataset_name=name, dataset_digest=digest)
                 for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)
        return stamp

    @_unavailable_as_error
    def log_inputs(self, run_id: str, datasets: list[DatasetInput]) -> None:
        self.client.log_inputs(run_id, datasets=datasets)

    @_unavailable_as_error
    def create_logged_model(self, experiment_id: str, run_id: str, name: str, params: Mapping[str, Any],
                            tags: Mapping[str, Any]) -> tuple[str, str]:
        """A PENDING LoggedModel from `run_id`: (its id, its artifact location)."""
        model = self.client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                                params={k: _param_value(v) for k, v in params.items()},
                                                tags={k: _tag_value(v) for k, v in tags.items()})
        return model.model_id, model.artifact_location

    @_unavailable_as_error
    def finish_logged_model(self, model_id: str, run_id: str, local_dir: Path, step: int) -> None:
        """Upload the saved model, show it among the run's outputs (at `step`) and mark it READY."""
        self.client.log_model_artifacts(model_id, str(local_dir))
        self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step)])
        self.client.finalize_logged_model(model_id, LoggedModelStatus.READY)

    @_unavailable_as_error
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, _tag_value(v)) for k, v in tags.items()])

    @_unavailable_as_error
    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    @_unavailable_as_error
    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    @_unavailable_as_error
    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    @_unavailable_as_error
    def log_dict(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    @_unavailable_as_error
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    @_unavailable_as_error
    def end_run(self, run_id: str, state: str, reason: str | None = None, name: str | None = None,
                status: str | None = None) -> None:
        """End a run with the status that matches the trial state (unless given); the reason becomes a tag."""
        tags = {"trial_state": state}
        if reason:
            tags["fail_reason"] = reason
        self.terminate(run_id, status or STATUS_FOR_STATE[state], name=name, tags=tags)

    @_unavailable_as_error
    def terminate(self, run_id: str, status: str, name: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> None:
        """Tags first, then the name, then the final status (FINISHED, FAILED or KILLED)."""
        if tags:
            self.set_tags(run_id, tags)
        if name:
            self.client.update_run(run_id, name=name)
        self.client.set_terminated(run_id, status=status)
        self.open_runs.discard(run_id)

    @_unavailable_as_error
    def child_runs(self, experiment_id: str, parent_id: str, tags: Mapping[str, str]) -> list[Run]:
        """The runs under `parent_id` that carry all of `tags` (deleted runs left out)."""
        terms = [f"tags.{PARENT_TAG} = '{parent_id}'", *(f"tags.{k} = '{v}'" for k, v in tags.items())]
        return self.client.search_runs([experiment_id], " and ".join(terms), max_results=5000)

    @_unavailable_as_error
    def running_run_ids(self, experiment_id: str) -> list[str]:
        runs = self.client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
        return [run.info.run_id for run in runs]

    @_unavailable_as_error
    def close_open_runs(self, status: str = "KILLED") -> None:
        """End every run still open (exit path); children before the parent they hang under."""
        for run_id in sorted(self.open_runs, key=self._is_parent):
            self.client.set_terminated(run_id, status=status)
        self.open_runs.clear()

    def _is_parent(self, run_id: str) -> bool:
        return PARENT_TAG not in self.client.get_run(run_id).data.tags


def _param_value(value: Any) -> str:
    return "None" if value is None else str(value)[:6000]


def _tag_value(value: Any) -> str:
    return str(value)[:MAX_TAG_LENGTH]


def ensure_tracking_schema(tracking_uri: str) -> None:
    """Touch the MLflow store once so its tables exist before trials (and workers) start."""
    if tracking_uri.startswith("sqlite:///"):  # the database's folder must exist before the first connection
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    Tracker(tracking_uri).ping()
