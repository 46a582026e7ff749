"""The Optuna objective: sample a config, train it with `seg.fit` and an epoch callback that reports
and prunes, return the best val mIoU. Its MLflow run lives in `search.tracking.trial_run`.

Outcomes and what they become:
- trains to the end -> COMPLETE, value = best val mIoU, MLflow run FINISHED, artifacts logged;
- `trial.should_prune()` -> PRUNED, run KILLED;
- its epoch allowance (`--total-epochs`, see `search.study.quota`) is spent before max_epochs ->
  PRUNED, marked `stopped_by_budget` (user attr and run tag), run KILLED;
- expected failures -> FAIL with `fail_reason` (and `fail_detail`) in the trial's user attrs and as
  run tags, run FAILED, and the study goes on (`TrialFailed` is caught): an invalid or infeasible
  config, "oom" (estimated before training, or raised during it; device memory is freed before the
  next trial), "nan" (a non-finite loss), "timeout" (past the per-trial wall-clock limit);
- the tracking store goes away -> the trial still trains and its result is told to Optuna; MLflow
  logging stops, `ctx.tracking.error` is set, and the runner stops the study with a clear error;
- Ctrl-C or SIGTERM -> FAIL ("interrupted"), run KILLED, and the exception ends the run;
- anything else (a bug) -> FAIL, run FAILED, and the exception stops the run with its traceback.
Every finished trial records `epochs_trained` (epochs completed); Optuna keeps its start and end times.
A planned study's trial also records the plan's `epoch_seconds_predicted` beside its measured
`epoch_seconds` (`search.plan.epoch_forecast`), and the run warns once when an epoch takes more
than 1.5x the prediction.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch

from search.guards.deadline import TrialTimeout, WallClockLimit
from search.guards.signals import SignalHold, deferred_signals
from search.plan.epoch_forecast import PREDICTED, EpochForecast, summary
from search.study.definition import StudyDef
from search.study.quota import BUDGET_STOP_ATTR, EPOCHS_ATTR
from search.study.space import InfeasibleConfigError, RunOptions, config_from_trial
from search.tracking.client import TrackingUnavailable
from search.tracking.trial_run import StudyTracking, TrialRun
from seg.config import Config
from seg.data import SegmentationData
from seg.memory import GiB, check_training_memory, memory_limit, release_device_memory, training_input_size
from seg.runtime import resolve_device
from seg.train import EpochResult, NonFiniteLossError, fit


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
    tracking: StudyTracking
    progress: Progress = field(default_factory=Progress)
    # Called once the trial exists in the storage; returns its epoch allowance (None: no epoch budget).
    on_trial_start: Callable[[optuna.Trial], int | None] = field(default=lambda trial: None)
    # Holds Ctrl-C/SIGTERM from the end of a finished trial until Optuna has stored its state.
    signal_hold: SignalHold = field(default_factory=SignalHold)


def fail(trial: optuna.Trial, reason: str, detail: str | None = None) -> TrialFailed:
    """Record why the trial failed (user attrs, later run tags) and return the exception to raise."""
    trial.set_user_attr("fail_reason", reason)
    if detail:
        trial.set_user_attr("fail_detail", detail)
    return TrialFailed(f"{reason}: {detail}" if detail else reason)


class Objective:
    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx
        self.device = resolve_device(ctx.opts.device)
        self.forecast = EpochForecast()

    def __call__(self, trial: optuna.Trial) -> float:
        ctx, start = self.ctx, time.perf_counter()
        self.allowance = ctx.on_trial_start(trial)
        self.epochs_done = 0
        self.timing = {"fit": 0.0, "epoch_hooks": 0.0, "artifacts": 0.0}
        self.predicted: float | None = None
        self.epoch_seconds: list[float] = []
        run = TrialRun(ctx.tracking, trial)
        try:
            run.start()
        except TrackingUnavailable as err:
            raise fail(trial, "tracking unavailable", str(err)) from None
        try:
            with WallClockLimit(ctx.opts.trial_timeout_s) as limit:
                cfg = self.sample(trial, run)
                self.check_memory(trial, cfg)
                value = self.train(trial, cfg, run, limit)
            run.end("COMPLETE")
        except optuna.TrialPruned:
            run.end("PRUNED")
            raise
        except TrialFailed as err:
            run.end("FAIL", reason=trial.user_attrs.get("fail_reason", str(err)))
            raise
        except BaseException as err:  # a bug, Ctrl-C or SIGTERM: record it, then let it stop the run
            interrupted = isinstance(err, KeyboardInterrupt)
            reason = "interrupted" if interrupted else f"error: {type(err).__name__}: {err}"
            trial.set_user_attr("fail_reason", reason)
            run.set_tags({"traceback": traceback.format_exc()[-4000:]})
            # Interrupted trials are FAIL in Optuna; their run is KILLED, a bug's run FAILED.
            run.end("FAIL", reason=reason, status="KILLED" if interrupted else "FAILED")
            raise
        finally:
            trial.set_user_attr(EPOCHS_ATTR, self.epochs_done)
            for key, seconds in summary(self.epoch_seconds, self.predicted).items():
                trial.set_user_attr(key, seconds)
            self._record_timing(trial, time.perf_counter() - start, run.monitor_cpu_s)
            self._release_memory(trial)
            if not isinstance(sys.exc_info()[1], KeyboardInterrupt):  # an interrupted trial is told FAIL at once
                ctx.signal_hold.start()  # released by the run's first callback, after Optuna's tell
        return value

    def sample(self, trial: optuna.Trial, run: TrialRun) -> Config:
        """The trial's config from the study's space; a config that cannot work fails the trial."""
        name = self.ctx.sdef.name
        try:
            cfg = config_from_trial(trial, self.ctx.sdef, self.ctx.opts)
        except InfeasibleConfigError as err:
            run.log_sampled(name)
            raise fail(trial, f"infeasible: {err}") from err
        except ValueError as err:
            run.log_sampled(name)
            raise fail(trial, f"invalid config: {err}") from err
        run.log_config(cfg, name)
        trial.set_user_attr("config", cfg.to_dict())
        self.predict(trial, cfg, run)
        return cfg

    def predict(self, trial: optuna.Trial, cfg: Config, run: TrialRun) -> None:
        """The plan's predicted seconds an epoch of this config, beside which the trial logs its measured ones."""
        self.predicted = self.forecast.predict(trial.study, cfg, self.ctx.data, self.device.type,
                                               self.ctx.sdef.time_model)
        if self.predicted is not None:
            trial.set_user_attr(PREDICTED, round(self.predicted, 3))
            run.log_metrics({PREDICTED: self.predicted}, step=0)

    def check_memory(self, trial: optuna.Trial, cfg: Config) -> None:
        """Reject at once a config whose training step cannot fit the device (or the given cap)."""
        limit = memory_limit(self.device, self.ctx.opts.memory_limit_gb)
        if limit is None:
            return
        verdict = check_training_memory(cfg, self.ctx.data, self.device, limit)
        trial.set_user_attr("memory_estimate_gib", round(verdict.estimate / GiB, 3))
        if verdict.refused:
            raise fail(trial, "oom", verdict.refused)
        if verdict.probe_peak is not None:
            trial.set_user_attr("memory_probe_gib", round(verdict.probe_peak / GiB, 3))

    def train(self, trial: optuna.Trial, cfg: Config, run: TrialRun, limit: WallClockLimit) -> float:
        """`seg.fit` with an epoch callback that logs, reports and prunes; then the artifacts."""
        progress = self.ctx.progress
        progress.trial, progress.epoch, progress.epochs, progress.current_miou = trial.number, 0, cfg.train.epochs, None
        progress.on_change()

        def on_epoch_end(record: EpochResult) -> bool:
            with limit.unguarded():  # never cut an Optuna or MLflow write in half
                return self.epoch_end(trial, run, record, last=record.epoch + 1 >= cfg.train.epochs)

        t_fit, oom = time.perf_counter(), False
        try:
            with limit.guarded():
                result = fit(cfg, self.ctx.data, on_epoch_end=on_epoch_end)
        except NonFiniteLossError as err:
            raise fail(trial, "nan", str(err)) from None
        except TrialTimeout as err:
            raise fail(trial, "timeout", str(err)) from None
        except torch.OutOfMemoryError:
            oom = True  # handled below, outside the except block whose traceback pins the tensors
        finally:
            self.timing["fit"] = time.perf_counter() - t_fit
        if oom:
            release_device_memory(self.device, drop_caches=True)
            h, w = training_input_size(cfg, self.ctx.data)
            raise fail(trial, "oom", f"out of memory during training (batch {cfg.train.batch_size}, {h}x{w} on "
                                     f"{self.device})")
        trial.set_user_attr("best_epoch", result.best_epoch)
        if not math.isfinite(result.best_miou):
            raise fail(trial, "nan", "no finite validation mIoU")
        t_art = time.perf_counter()
        run.log_artifacts(cfg, result, self.ctx.data, self.ctx.class_names)
        self.timing["artifacts"] = time.perf_counter() - t_art
        return result.best_miou

    def epoch_end(self, trial: optuna.Trial, run: TrialRun, record: EpochResult, last: bool = False) -> bool:
        """Log the epoch, report it to Optuna, and prune if the pruner says so."""
        t0, progress = time.perf_counter(), self.ctx.progress
        with deferred_signals():  # Ctrl-C waits for these writes, so no store is left locked or half-written
            run.log_epoch(record, self.ctx.class_names)
            # Optuna's step is the resource spent, epochs completed, so pruner rungs count epochs
            # (min_resource=1 can prune after the first epoch); MLflow's step is the 0-based epoch.
            trial.report(record.val_miou, record.epoch + 1)
            self.epochs_done = record.epoch + 1
            self.epoch_seconds.append(record.seconds)
            if record.epoch >= 1 or last:  # the first epoch also warms up (allocations, kernels): judged from the 2nd
                self.forecast.check(trial.number, record.seconds, self.predicted)
            # Pruning after the last epoch saves nothing and would throw a finished result away (SHA's
            # rung at max_epochs=9 with factor 3 would otherwise drop fully trained trials).
            prune = not last and trial.should_prune()
            spent = not last and not prune and self.allowance is not None and record.epoch + 1 >= self.allowance
            if spent:
                trial.set_user_attr(BUDGET_STOP_ATTR, True)
                run.set_tags({"stopped_by": "budget"})
        progress.epoch, progress.current_miou = record.epoch + 1, record.val_miou
        progress.on_change()
        self.timing["epoch_hooks"] += time.perf_counter() - t0
        if prune:
            raise optuna.TrialPruned(f"pruned after epoch {record.epoch} at val mIoU {record.val_miou:.4f}")
        if spent:
            raise optuna.TrialPruned(f"stopped after {record.epoch + 1} epochs: the study's epoch budget is spent")
        return False

    def _record_timing(self, trial: optuna.Trial, total: float, system_metrics_cpu: float) -> None:
        """Where the trial's time went. harness = Optuna + MLflow bookkeeping around training
        (run start/end, params, per-epoch report/prune/log), artifacts = checkpoint, figures, model;
        system metrics = CPU seconds of the monitor's thread, which samples while the model trains."""
        t = self.timing
        training = t["fit"] - t["epoch_hooks"]
        harness = total - training - t["artifacts"]
        trial.set_user_attr("timing", {"total_s": round(total, 3), "training_s": round(training, 3),
                                       "harness_s": round(harness, 4), "epoch_hooks_s": round(t["epoch_hooks"], 4),
                                       "artifacts_s": round(t["artifacts"], 3),
                                       "system_metrics_cpu_s": round(system_metrics_cpu, 4)})

    def _release_memory(self, trial: optuna.Trial) -> None:
        """On CUDA, free what the trial held before the next one starts and record what is left
        allocated. (On CPU the allocator returns memory by itself; a gc pass would only cost time.)"""
        if self.device.type == "cuda":
            trial.set_user_attr("cuda_memory_allocated_after", release_device_memory(self.device))
