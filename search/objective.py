"""The Optuna objective: one trial = sample a config, train it with `seg.fit`, report, prune, log.

Outcomes and what they become:
- trains to the end -> COMPLETE, value = best val mIoU, MLflow run FINISHED, artifacts logged;
- `trial.should_prune()` -> PRUNED, run KILLED;
- expected failures -> FAIL with `fail_reason` (and `fail_detail`) in the trial's user attrs and as
  run tags, run FAILED, and the study goes on (`TrialFailed` is caught): an invalid or infeasible
  config, "oom" (estimated before training, or raised during it; device memory is freed before the
  next trial), "nan" (a non-finite loss), "timeout" (past the per-trial wall-clock limit);
- the tracking store goes away -> the trial still trains and its result is told to Optuna; MLflow
  logging stops, `ctx.tracking_error` is set, and the runner stops the study with a clear error;
- Ctrl-C or SIGTERM -> FAIL ("interrupted"), run KILLED, and the exception ends the run;
- anything else (a bug) -> FAIL, run FAILED, and the exception stops the run with its traceback.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from search.artifacts import log_trial_artifacts
from search.deadline import TrialTimeout, WallClockLimit
from search.signals import deferred_signals
from search.space import InfeasibleConfigError, RunOptions, config_from_trial
from search.study_def import StudyDef
from search.tracking import Tracker, TrackingUnavailable, epoch_metrics, trial_run_name
from seg.config import Config
from seg.data import SegmentationData
from seg.memory import (
    GiB,
    estimate_training_memory,
    memory_limit,
    probe_training_memory,
    release_device_memory,
)
from seg.runtime import precision_for, resolve_device
from seg.train import EpochResult, FitResult, NonFiniteLossError, fit, save_result


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
    on_trial_start: Callable[[], None] = field(default=lambda: None)  # the trial now exists in the storage
    tracking_error: str | None = None  # set when the tracking store stopped answering


class Objective:
    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx
        self.device = resolve_device(ctx.opts.device)

    def __call__(self, trial: optuna.Trial) -> float:
        ctx, start = self.ctx, time.perf_counter()
        ctx.on_trial_start()
        self.timing = {"fit": 0.0, "epoch_hooks": 0.0, "artifacts": 0.0}
        self.run_id = self._start_run(trial)
        try:
            with WallClockLimit(ctx.opts.trial_timeout_s) as self.limit:
                cfg = self._config(trial)
                self._check_memory(trial, cfg)
                value = self._train(trial, cfg)
            self._end(trial, "COMPLETE")
        except optuna.TrialPruned:
            self._end(trial, "PRUNED")
            raise
        except TrialFailed as err:
            self._end(trial, "FAIL", reason=trial.user_attrs.get("fail_reason", str(err)))
            raise
        except BaseException as err:  # a bug, Ctrl-C or SIGTERM: record it, then let it stop the run
            interrupted = isinstance(err, KeyboardInterrupt)
            reason = "interrupted" if interrupted else f"error: {type(err).__name__}: {err}"
            trial.set_user_attr("fail_reason", reason)
            self._track(ctx.tracker.set_tags, self.run_id, {"traceback": traceback.format_exc()[-4000:]})
            # Interrupted trials are FAIL in Optuna; their run is KILLED, a bug's run FAILED.
            self._end(trial, "FAIL", reason=reason, status="KILLED" if interrupted else "FAILED")
            raise
        finally:
            self._record_timing(trial, time.perf_counter() - start)
            self._release_memory(trial)
        return value

    # --- MLflow, tolerant of a tracking store that goes away -------------------------------------

    def _start_run(self, trial: optuna.Trial) -> str:
        ctx = self.ctx
        if ctx.tracking_error is None:
            try:
                run_id = ctx.tracker.start_run(ctx.experiment_id, f"trial-{trial.number:03d}",
                                               {**ctx.run_tags, "trial_number": trial.number, "trial_state": "RUNNING"},
                                               parent_id=ctx.parent_run_id)
                trial.set_user_attr("mlflow_run_id", run_id)
                if "worker" in ctx.run_tags:
                    trial.set_user_attr("worker", int(ctx.run_tags["worker"]))
                return run_id
            except TrackingUnavailable as err:
                ctx.tracking_error = str(err)
        trial.set_user_attr("tracking_error", ctx.tracking_error)
        raise self._fail(trial, "tracking unavailable", ctx.tracking_error)

    def _track(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the tracker unless it already failed; a failure stops MLflow logging, never the training."""
        if self.ctx.tracking_error is not None:
            return None
        try:
            return method(*args, **kwargs)
        except TrackingUnavailable as err:
            self.ctx.tracking_error = str(err)
            return None

    def _end(self, trial: optuna.Trial, state: str, reason: str | None = None, status: str | None = None) -> None:
        if self.ctx.tracking_error is not None:
            trial.set_user_attr("tracking_error", self.ctx.tracking_error)
        detail = trial.user_attrs.get("fail_detail") if state == "FAIL" else None
        if detail:
            self._track(self.ctx.tracker.set_tags, self.run_id, {"fail_detail": detail})
        self._track(self.ctx.tracker.end_run, self.run_id, state, reason=reason,
                    name=trial_run_name(trial.number, state), status=status)

    # --- the trial ------------------------------------------------------------------------------

    def _config(self, trial: optuna.Trial) -> Config:
        ctx = self.ctx
        try:
            cfg = config_from_trial(trial, ctx.sdef, ctx.opts)
        except InfeasibleConfigError as err:
            self._log_sampled(trial)
            raise self._fail(trial, f"infeasible: {err}") from err
        except ValueError as err:
            self._log_sampled(trial)
            raise self._fail(trial, f"invalid config: {err}") from err
        params = {**cfg.flatten(), "trial_number": trial.number, "study_name": ctx.sdef.name}
        self._track(ctx.tracker.log_params, self.run_id, params)
        self._track(ctx.tracker.log_dict, self.run_id, cfg.to_dict(), "config.json")
        trial.set_user_attr("config", cfg.to_dict())
        return cfg

    def _log_sampled(self, trial: optuna.Trial) -> None:
        """A rejected config has no resolved form; log what was sampled so the run shows why."""
        self._track(self.ctx.tracker.log_params, self.run_id,
                    {**trial.params, "trial_number": trial.number, "study_name": self.ctx.sdef.name})

    def _fail(self, trial: optuna.Trial, reason: str, detail: str | None = None) -> TrialFailed:
        trial.set_user_attr("fail_reason", reason)
        if detail:
            trial.set_user_attr("fail_detail", detail)
        return TrialFailed(f"{reason}: {detail}" if detail else reason)

    def _check_memory(self, trial: optuna.Trial, cfg: Config) -> None:
        """Reject at once a config whose training step cannot fit the device (or the given cap)."""
        limit = memory_limit(self.device, self.ctx.opts.memory_limit_gb)
        if limit is None:
            return
        h, w = training_input_size(cfg, self.ctx.data)
        amp = precision_for(cfg.train, self.device).amp_dtype is not None
        estimate = estimate_training_memory(cfg, h, w, amp).total
        trial.set_user_attr("memory_estimate_gib", round(estimate / GiB, 3))
        where = f"batch {cfg.train.batch_size} at {h}x{w} on {self.device}"
        if estimate > limit:
            raise self._fail(trial, "oom", f"estimated peak {estimate / GiB:.2f} GiB for {where} exceeds the "
                                           f"{limit / GiB:.2f} GiB available (rejected before training)")
        if self.device.type == "cuda":
            self._probe_memory(trial, cfg, h, w, limit, where)

    def _probe_memory(self, trial: optuna.Trial, cfg: Config, h: int, w: int, limit: int, where: str) -> None:
        oom = False
        try:
            peak = probe_training_memory(cfg, h, w, self.device)
        except torch.OutOfMemoryError:
            oom = True  # leave the except block first: its traceback holds the probe's tensors
        if oom or peak > limit:
            release_device_memory(self.device, drop_caches=True)
            raise self._fail(trial, "oom", f"a probe training step for {where} ran out of memory "
                                           "(rejected before training)")
        trial.set_user_attr("memory_probe_gib", round(peak / GiB, 3))

    def _train(self, trial: optuna.Trial, cfg: Config) -> float:
        ctx, progress = self.ctx, self.ctx.progress
        progress.trial, progress.epoch, progress.epochs, progress.current_miou = trial.number, 0, cfg.train.epochs, None
        progress.on_change()

        def on_epoch_end(record: EpochResult) -> bool:
            with self.limit.unguarded():  # never cut an Optuna or MLflow write in half
                return self._epoch_end(trial, record, last=record.epoch + 1 >= cfg.train.epochs)

        t_fit, oom = time.perf_counter(), False
        try:
            with self.limit.guarded():
                result = fit(cfg, ctx.data, on_epoch_end=on_epoch_end)
        except NonFiniteLossError as err:
            raise self._fail(trial, "nan", str(err)) from None
        except TrialTimeout as err:
            raise self._fail(trial, "timeout", str(err)) from None
        except torch.OutOfMemoryError:
            oom = True  # handled below, outside the except block whose traceback pins the tensors
        finally:
            self.timing["fit"] = time.perf_counter() - t_fit
        if oom:
            release_device_memory(self.device, drop_caches=True)
            raise self._fail(trial, "oom", f"out of memory during training (batch {cfg.train.batch_size}, "
                                           f"{'x'.join(map(str, training_input_size(cfg, ctx.data)))} on {self.device})")
        trial.set_user_attr("epochs_trained", len(result.history))
        trial.set_user_attr("best_epoch", result.best_epoch)
        if not math.isfinite(result.best_miou):
            raise self._fail(trial, "nan", "no finite validation mIoU")
        t_art = time.perf_counter()
        self._log_artifacts(cfg, result)
        self.timing["artifacts"] = time.perf_counter() - t_art
        return result.best_miou

    def _epoch_end(self, trial: optuna.Trial, record: EpochResult, last: bool = False) -> bool:
        t0, progress = time.perf_counter(), self.ctx.progress
        with deferred_signals():  # Ctrl-C waits for these writes, so no store is left locked or half-written
            self._track(self.ctx.tracker.log_metrics, self.run_id, epoch_metrics(record, self.ctx.class_names),
                        step=record.epoch)
            # Optuna's step is the resource spent, epochs completed, so pruner rungs count epochs
            # (min_resource=1 can prune after the first epoch); MLflow's step is the 0-based epoch.
            trial.report(record.val_miou, record.epoch + 1)
            # Pruning after the last epoch saves nothing and would throw a finished result away (SHA's
            # rung at max_epochs=9 with factor 3 would otherwise drop fully trained trials).
            prune = not last and trial.should_prune()
        progress.epoch, progress.current_miou = record.epoch + 1, record.val_miou
        progress.on_change()
        self.timing["epoch_hooks"] += time.perf_counter() - t0
        if prune:
            trial.set_user_attr("epochs_trained", record.epoch + 1)
            raise optuna.TrialPruned(f"pruned after epoch {record.epoch} at val mIoU {record.val_miou:.4f}")
        return False

    def _log_artifacts(self, cfg: Config, result: FitResult) -> None:
        if self.ctx.tracking_error is not None:
            return
        with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
            ckpt = save_result(Path(tmp) / "best.pt", cfg, result, self.ctx.class_names)
            self._track(log_trial_artifacts, self.ctx.tracker, self.run_id, ckpt, self.ctx.data, result)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _record_timing(self, trial: optuna.Trial, total: float) -> None:
        """Where the trial's time went. harness = Optuna + MLflow bookkeeping around training
        (run start/end, params, per-epoch report/prune/log), artifacts = checkpoint, figures, model."""
        t = self.timing
        training = t["fit"] - t["epoch_hooks"]
        harness = total - training - t["artifacts"]
        trial.set_user_attr("timing", {"total_s": round(total, 3), "training_s": round(training, 3),
                                       "harness_s": round(harness, 4), "epoch_hooks_s": round(t["epoch_hooks"], 4),
                                       "artifacts_s": round(t["artifacts"], 3)})

    def _release_memory(self, trial: optuna.Trial) -> None:
        """On CUDA, free what the trial held before the next one starts and record what is left
        allocated. (On CPU the allocator returns memory by itself; a gc pass would only cost time.)"""
        if self.device.type == "cuda":
            trial.set_user_attr("cuda_memory_allocated_after", release_device_memory(self.device))


def training_input_size(cfg: Config, data: SegmentationData) -> tuple[int, int]:
    """(H, W) of a training batch: the crop, the resize, or the largest training image (pad-collate)."""
    t = cfg.transforms
    if t.crop_mode != "none":
        return t.crop_size, t.crop_size
    if t.resize:
        return tuple(t.resize)
    return (max(img.shape[-2] for img in data.train.images), max(img.shape[-1] for img in data.train.images))
