"""Typed settings of a search run, and the one process set-up every entry point calls.

`RunSettings` is built once, by `search.run.parse_args` from the command line or directly by the
benchmark; nothing past the CLI module sees an argparse namespace. Field names follow the flags
(`--total-trials` -> `total_trials`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search.study.space import RunOptions
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI
from search.tracking.system_metrics import DEFAULT_INTERVAL_S, quiet_monitor_logs

# Quiet, bounded MLflow defaults (the user's environment wins): no progress bars in logs, no
# telemetry, and a dead or slow tracking server fails a call in seconds instead of MLflow's
# default ~4-20 minutes of retries.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def configure_process() -> None:
    """Set-up for an entry point: MLflow's environment defaults and a headless matplotlib backend."""
    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_monitor_logs()
    import matplotlib

    matplotlib.use("Agg")  # figures are only written to files and data URIs


@dataclass(frozen=True)
class RunSettings:
    """One `search.run`: which study, where it is stored, how many trials, and the per-trial overrides."""

    # The definition: a study TOML file, or the name of one in studies/; None: studies/default.toml, or
    # with `data` a study planned for that dataset.
    study: str | None = None
    study_name: str | None = None  # the study's name in the storage (default: the definition's name)
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    trials: int | None = None  # trials this run adds (default: the definition's budget.trials)
    total_trials: int | None = None  # instead: trials the study should hold when done
    total_epochs: int | None = None  # epochs the study's trials should have trained in all when done
    workers: int = 1
    timeout: float | None = None  # seconds after the command started (planning included) when no new trial starts
    heartbeat: int = 10  # 0: no stale-trial detection
    grace: int | None = None  # default: 3 x heartbeat
    seed: int = 0
    device: str = "auto"
    # Overrides of the definition, for every trial of this run.
    data: str | None = None
    epochs: int | None = None
    trial_timeout: float | None = None
    memory_limit_gb: float | None = None
    sampler: str | None = None
    pruner: Mapping[str, Any] | None = None  # parsed --pruner NAME[:KEY=VALUE,...]
    no_baseline: bool = False
    # After the search: retrain the top `confirm` trials with `confirm_seeds` fresh seeds (default: [confirm]).
    confirm: int | None = None
    confirm_seeds: int | None = None
    confirm_share: float | None = None  # the part of the budget kept for them (default: [confirm] share)
    system_metrics_interval: float = DEFAULT_INTERVAL_S  # seconds between samples of each trial run's system metrics
    no_system_metrics: bool = False
    # Set by `--workers` for its child processes.
    worker_index: int | None = None
    target_total: int | None = None
    # When this command started (time.monotonic()): the timeout counts from here, so planning and set-up
    # are part of it.
    started: float = field(default_factory=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        for name in ("trials", "total_trials", "heartbeat", "grace", "confirm", "timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a non-negative number")
        for name in ("workers", "total_epochs", "confirm_seeds"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive number")
        if self.confirm_share is not None and not 0 <= self.confirm_share < 1:
            raise ValueError(f"--confirm-share {self.confirm_share}: expected a fraction of the budget, 0 <= share < 1")
        if not self.system_metrics_interval > 0:
            raise ValueError(f"--system-metrics-interval {self.system_metrics_interval}: expected a positive number "
                             "of seconds (--no-system-metrics turns them off)")
        if self.trials is not None and self.total_trials is not None:
            raise ValueError("give --trials (trials to add) or --total-trials (trials the study should hold), not both")

    def seconds_left(self, timeout: float | None) -> float | None:
        """What is left of `timeout` seconds counted from this command's start (None: no limit)."""
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - self.started))

    @property
    def budget_given(self) -> bool:
        """Any budget flag on the command line: then they replace the study file's budget."""
        return any(v is not None for v in (self.trials, self.total_trials, self.total_epochs, self.target_total))

    @property
    def is_worker(self) -> bool:
        return self.worker_index is not None

    @property
    def system_metrics_s(self) -> float:
        """Seconds between system metrics samples of a trial's run; 0 when they are off."""
        return 0.0 if self.no_system_metrics else self.system_metrics_interval

    @property
    def heartbeat_interval(self) -> int | None:
        return self.heartbeat or None

    @property
    def grace_period(self) -> int | None:
        return (self.grace or 3 * self.heartbeat) if self.heartbeat else None

    def trial_options(self, max_epochs: int, trial_timeout_s: float | None) -> RunOptions:
        """What every trial of this run takes from the command line, over the definition's budget."""
        return RunOptions(data_root=self.data, epochs=max_epochs, device=self.device, seed=self.seed,
                          trial_timeout_s=self.trial_timeout or trial_timeout_s, memory_limit_gb=self.memory_limit_gb)
