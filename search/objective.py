"""The Optuna objective: one trial = sample a config, train it with `seg.fit`, report, prune, log.

Outcomes and what they become:
- trains to the end -> COMPLETE, value = best val mIoU, MLflow run FINISHED, artifacts logged;
- `trial.should_prune()` -> PRUNED, run KILLED;
- an invalid or infeasible config, or a non-finite loss -> FAIL with `fail_reason` in the trial's
  user attrs and as a run tag, run FAILED, and the study goes on (`TrialFailed` is caught);
- anything else (a bug) -> FAIL, run FAILED, and the exception stops the run with its traceback.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna

from seg.config import Config
from seg.data import SegmentationData
from seg.train import EpochResult, FitResult, NonFiniteLossError, fit, save_result

from search.artifacts import log_trial_artifacts
from search.space import InfeasibleConfigError, RunOptions, config_from_trial
from search.study_def import StudyDef
from search.tracking import Tracker, epoch_metrics


class TrialFailed(Exception):
    """An expected failure of one trial: it is marked FAIL and the study continues."""


@dataclass
class Progress:
    """What the live display shows; updated by the objective."""

    trial: int | None = None
    epoch: int = 0
    epochs: int = 0
    current_miou: float | None = None
    best_miou: float | None = None
    on_change: Callable[[], None] = field(default=lambda: None)


@dataclass
class TrialContext:
    """Everything a trial needs that is shared across trials of one run."""

    sdef: StudyDef
    opts: RunOptions
    data: SegmentationData
    class_names: tuple[str, ...]
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    run_tags: dict[str, str]
    progress: Progress = field(default_factory=Progress)


class Objective:
    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx

    def __call__(self, trial: optuna.Trial) -> float:
        ctx, start = self.ctx, time.perf_counter()
        self.timing = {"fit": 0.0, "epoch_hooks": 0.0, "artifacts": 0.0}
        run_id = ctx.tracker.start_run(ctx.experiment_id, f"trial-{trial.number:03d}",
                                       {**ctx.run_tags, "trial_number": trial.number, "trial_state": "RUNNING"},
                                       parent_id=ctx.parent_run_id)
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            cfg = self._config(trial, run_id)
            value = self._train(trial, run_id, cfg)
            self._end(trial, run_id, "COMPLETE")
        except optuna.TrialPruned:
            self._end(trial, run_id, "PRUNED")
            raise
        except TrialFailed as err:
            self._end(trial, run_id, "FAIL", reason=str(err))
            raise
        except BaseException as err:  # a bug, Ctrl-C or SIGTERM: record it, then let it stop the run
            reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"error: {type(err).__name__}: {err}"
            trial.set_user_attr("fail_reason", reason)
            ctx.tracker.set_tags(run_id, {"traceback": traceback.format_exc()[-4000:]})
            # Interrupted trials are FAIL in Optuna; their run is KILLED, a bug's run FAILED.
            self._end(trial, run_id, "FAIL", reason=reason,
                      status="KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        finally:
            self._record_timing(trial, time.perf_counter() - start)
        return value

    def _record_timing(self, trial: optuna.Trial, total: float) -> None:
        """Where the trial's time went. harness = Optuna + MLflow bookkeeping around training
        (run start/end, params, per-epoch report/prune/log), artifacts = checkpoint, figures, model."""
        t = self.timing
        training = t["fit"] - t["epoch_hooks"]
        harness = total - training - t["artifacts"]
        trial.set_user_attr("timing", {"total_s": round(total, 3), "training_s": round(training, 3),
                                       "harness_s": round(harness, 4), "epoch_hooks_s": round(t["epoch_hooks"], 4),
                                       "artifacts_s": round(t["artifacts"], 3)})

    def _config(self, trial: optuna.Trial, run_id: str) -> Config:
        try:
            cfg = config_from_trial(trial, self.ctx.sdef, self.ctx.opts)
        except InfeasibleConfigError as err:
            self._log_sampled(trial, run_id)
            raise self._fail(trial, f"infeasible: {err}") from err
        except ValueError as err:
            self._log_sampled(trial, run_id)
            raise self._fail(trial, f"invalid config: {err}") from err
        params = {**cfg.flatten(), "trial_number": trial.number, "study_name": self.ctx.sdef.name}
        self.ctx.tracker.log_params(run_id, params)
        self.ctx.tracker.log_dict(run_id, cfg.to_dict(), "config.json")
        trial.set_user_attr("config", cfg.to_dict())
        return cfg

    def _log_sampled(self, trial: optuna.Trial, run_id: str) -> None:
        """A rejected config has no resolved form; log what was sampled so the run shows why."""
        self.ctx.tracker.log_params(run_id, {**trial.params, "trial_number": trial.number,
                                             "study_name": self.ctx.sdef.name})

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        trial.set_user_attr("fail_reason", reason)
        return TrialFailed(reason)

    def _train(self, trial: optuna.Trial, run_id: str, cfg: Config) -> float:
        ctx, progress = self.ctx, self.ctx.progress
        progress.trial, progress.epoch, progress.epochs, progress.current_miou = trial.number, 0, cfg.train.epochs, None
        progress.on_change()

        def on_epoch_end(record: EpochResult) -> bool:
            t0 = time.perf_counter()
            ctx.tracker.log_metrics(run_id, epoch_metrics(record, ctx.class_names), step=record.epoch)
            # Optuna's step is the resource spent, epochs completed, so pruner rungs count epochs
            # (min_resource=1 can prune after the first epoch); MLflow's step is the 0-based epoch.
            trial.report(record.val_miou, record.epoch + 1)
            prune = trial.should_prune()
            progress.epoch, progress.current_miou = record.epoch + 1, record.val_miou
            progress.on_change()
            self.timing["epoch_hooks"] += time.perf_counter() - t0
            if prune:
                trial.set_user_attr("epochs_trained", record.epoch + 1)
                raise optuna.TrialPruned(f"pruned after epoch {record.epoch} at val mIoU {record.val_miou:.4f}")
            return False

        t_fit = time.perf_counter()
        try:
            result = fit(cfg, ctx.data, on_epoch_end=on_epoch_end)
        except NonFiniteLossError as err:
            raise self._fail(trial, "nan") from err
        finally:
            self.timing["fit"] = time.perf_counter() - t_fit
        trial.set_user_attr("epochs_trained", len(result.history))
        trial.set_user_attr("best_epoch", result.best_epoch)
        if not math.isfinite(result.best_miou):
            raise self._fail(trial, "nan")
        t_art = time.perf_counter()
        self._log_artifacts(run_id, cfg, result)
        self.timing["artifacts"] = time.perf_counter() - t_art
        return result.best_miou

    def _log_artifacts(self, run_id: str, cfg: Config, result: FitResult) -> None:
        with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
            ckpt = save_result(Path(tmp) / "best.pt", cfg, result, self.ctx.class_names)
            log_trial_artifacts(self.ctx.tracker, run_id, ckpt, self.ctx.data, result)

    def _end(self, trial: optuna.Trial, run_id: str, state: str, reason: str | None = None,
             status: str | None = None) -> None:
        label = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[state]
        self.ctx.tracker.end_run(run_id, state, reason=reason, name=f"trial-{trial.number:03d}-{label}", status=status)

