"""Run real harness trials for the benchmark: temp Optuna + MLflow sqlite storages, `search.session.prepare`,
and `study.optimize(Objective(ctx))` under the run's quota (a trial count and/or an epoch budget,
`search.study.quota`), exactly the path `python -m search.run` takes (no display, no registry)."""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna

from search.objective import Objective, TrialContext, TrialFailed
from search.session import prepare
from search.settings import RunSettings
from search.study.quota import Budget, StudyQuota, lock_path_for
from search.study.samplers_pruners import parse_pruner


@dataclass(frozen=True)
class StudyRun:
    """One finished study run: the study (still readable from its storage) and its wall time."""

    study: optuna.Study
    wall_s: float


@contextmanager
def temp_storages(prefix: str = "bench-") -> Iterator[Path]:
    """A temp folder for one run's Optuna and MLflow sqlite files; removed afterwards, never the repo's."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def harness_settings(root: Path, study: str, *, pruner: str | None = None, epochs: int | None = None, seed: int = 0,
                     device: str = "cpu", study_name: str | None = None, total_epochs: int | None = None,
                     system_metrics: bool = True) -> RunSettings:
    """The `search.run` settings for a study whose storages live under `root` (system metrics as by default)."""
    return RunSettings(study=study, storage=f"sqlite:///{root}/optuna.db", tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db",
                       seed=seed, device=device, pruner=parse_pruner(pruner) if pruner else None, epochs=epochs,
                       study_name=study_name, total_epochs=total_epochs, no_system_metrics=not system_metrics)


def quiet_optuna() -> None:
    """Benchmark output is the tables; library chatter (schema creation, pyfunc hints) is noise there."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def prepare_study(settings: RunSettings) -> tuple[optuna.Study, TrialContext]:
    quiet_optuna()
    return prepare(settings)


def optimize(study: optuna.Study, ctx: TrialContext, n_trials: int | None, storage: str,
             total_epochs: int | None = None) -> StudyRun:
    """Run trials through the real Objective until `n_trials` trials (of a fresh study) or `total_epochs`
    epochs, whichever comes first; every MLflow run is ended whatever happens."""
    quota = StudyQuota(study, Budget(n_trials, total_epochs), lock_path_for(storage, study.study_name),
                       ctx.sdef.max_epochs, wait_for_running=False)
    ctx.on_trial_start = quota.start
    status, start = "FAILED", time.perf_counter()
    try:
        if quota.claim():
            study.optimize(Objective(ctx), n_trials=None, catch=(TrialFailed,), callbacks=[quota.after_trial],
                           gc_after_trial=False)
        status = "FINISHED"
    finally:
        quota.release()
        ctx.tracking.tracker.close_open_runs(status)
    return StudyRun(study, time.perf_counter() - start)
