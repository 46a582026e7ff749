"""The retrains of one confirm: the top trials' configurations trained again with fresh seeds, the record
on the study, and the champion moved to the best confirmed configuration (`search.confirm` runs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from rich.console import Console

from search.guards.signals import deferred_signals
from search.registry import champion_uri, crown_confirmed, registry_client
from search.study.confirm_record import CONFIRM_ATTR, RANK_BY, best_retrain, confirm_seeds, ranked, summarize
from search.study.quota import BASELINE_ATTR, EPOCHS_ATTR
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI
from search.tracking.confirm_run import RETRY, ConfirmRuns, Key, Retrain
from seg.config import Config
from seg.loaders import class_names, resolve_dataset
from seg.memory import release_device_memory
from seg.runtime import resolve_device
from seg.train import NonFiniteLossError, fit

COMPLETE = optuna.trial.TrialState.COMPLETE


@dataclass(frozen=True)
class ConfirmSettings:
    study: str  # the study's name in the storage
    top: int = 3
    seeds: int = 3
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    device: str = "auto"
    data: str | None = None  # a folder dataset that has moved
    epochs: int | None = None  # train each retrain this long instead of its trial's epochs
    # Or: the retrains share this many seconds; each trains as many epochs as fit at its trial's measured
    # seconds per epoch, never fewer than the trial trained.
    seconds: float | None = None
    margin: float = 0.0  # the [baseline] trial's credit in the ranking (top_trials)

    def __post_init__(self) -> None:
        if self.top < 1 or self.seeds < 1:
            raise ValueError(f"--top {self.top} --seeds {self.seeds}: expected positive numbers")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: expected a positive number of epochs")
        if self.seconds is not None and not self.seconds >= 0:
            raise ValueError(f"--seconds {self.seconds}: expected a number of seconds >= 0")
        if not 0 <= self.margin < 1:
            raise ValueError(f"--margin {self.margin}: expected a lead in the metric, 0 <= margin < 1")
        if self.epochs is not None and self.seconds is not None:
            raise ValueError(f"--epochs {self.epochs} --seconds {self.seconds:g}: give one of them")


def top_trials(study: optuna.Study, k: int, margin: float = 0.0) -> list[optuna.trial.FrozenTrial]:
    """The k best complete trials that hold their config (ties: the earlier trial first).

    With a `margin` the [baseline] trial ranks as if its value were that much better: another trial
    goes ahead of it only by leading it by more than the margin. A short trial's value is partly its
    training seed, and the best of many such values is the luckiest, so a small lead over the known-good
    configuration is no evidence (docs/performance.md)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,))
                if t.value is not None and "config" in t.user_attrs]
    credit = {t.number: margin if t.user_attrs.get(BASELINE_ATTR) else 0.0 for t in complete}
    return sorted(complete, key=lambda t: (sign * t.value - credit[t.number], t.number))[:k]


def kept_baseline(study: optuna.Study, top: list[optuna.trial.FrozenTrial], margin: float) -> dict[str, Any] | None:
    """Which trial the margin kept out of the retrains for the [baseline], by how much it led; None when
    the margin changed nothing."""
    plain, chosen = top_trials(study, len(top)), {t.number for t in top}
    baseline = next((t for t in top if t.user_attrs.get(BASELINE_ATTR)), None)
    if baseline is None or all(t.number in chosen for t in plain):
        return None
    best = plain[0]
    return {"baseline_trial": baseline.number, "baseline_value": baseline.value, "trial": best.number,
            "value": best.value, "lead": abs(best.value - baseline.value), "margin": margin}


def epochs_that_fit(trial: optuna.trial.FrozenTrial, trial_epochs: int, seconds: float) -> int:
    """Epochs of one retrain that fit in `seconds` at the trial's wall seconds an epoch (its logging and
    model included, so the estimate errs long), never fewer than the trial's own `trial_epochs`."""
    epochs_done = trial.user_attrs.get(EPOCHS_ATTR) or len(trial.intermediate_values)
    if not (trial.datetime_start and trial.datetime_complete and epochs_done):
        return trial_epochs
    per_epoch = (trial.datetime_complete - trial.datetime_start).total_seconds() / epochs_done
    return max(trial_epochs, math.floor(seconds / per_epoch)) if per_epoch > 0 else trial_epochs


class Confirmation:
    """The retrains of one confirm, in order (trial by trial, seed by seed), then the record and the champion."""

    def __init__(self, study: optuna.Study, settings: ConfirmSettings, runs: ConfirmRuns, console: Console) -> None:
        self.study, self.settings, self.runs, self.console = study, settings, runs, console
        self.maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        self.epochs: dict[int, int] = {}  # trial number -> epochs of its retrains
        self.kept: dict[str, Any] | None = None  # kept_baseline's record, when the margin changed the ranking

    def run(self, top: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
        seeds = confirm_seeds(self.settings.seeds)
        # Once per confirm, not per saved record: what the margin changed in the ranking.
        self.kept = kept_baseline(self.study, top, self.settings.margin) if self.settings.margin else None
        configs = {t.number: self.config(t, len(top) * len(seeds)) for t in top}
        self.epochs = {number: cfg.train.epochs for number, cfg in configs.items()}
        done = self.runs.done(self.epochs)
        deferred: list[tuple[optuna.trial.FrozenTrial, Key, int, Config]] = []  # out of memory once
        for trial in top:
            base = configs[trial.number]
            resolve_dataset(base.data)  # validated (and cached) before a run is opened for it
            for index, seed in enumerate(seeds, start=1):
                key = (trial.number, index)
                if key in done:
                    continue
                oom_before = key in self.runs.out_of_memory  # an earlier confirm's OOM: its second try comes last
                retrain = None if oom_before else self.retrain(trial, key, seed, base, last_try=False)
                if retrain is None or retrain.status == RETRY:
                    deferred.append((trial, key, seed, base))
                else:
                    done[key] = retrain
                self.save(top, seeds, done)
        for trial, key, seed, base in deferred:  # the memory another process held may be free by now
            done[key] = self.retrain(trial, key, seed, base, last_try=True)
            self.save(top, seeds, done)
        return self.save(top, seeds, done)

    def config(self, trial: optuna.trial.FrozenTrial, retrains: int) -> Config:
        """The trial's config as retrained: this device, the moved data, and the length asked for."""
        cfg = Config.from_dict(trial.user_attrs["config"], source=f"trial {trial.number}'s config user attr")
        epochs = self.settings.epochs
        if self.settings.seconds is not None:
            epochs = epochs_that_fit(trial, cfg.train.epochs, self.settings.seconds / retrains)
        return cfg.replace(train={"device": self.settings.device, **({"epochs": epochs} if epochs else {})},
                           data={"root": self.settings.data} if self.settings.data else {})

    def retrain(self, trial: optuna.trial.FrozenTrial, key: Key, seed: int, base: Config, last_try: bool) -> Retrain:
        """Train the configuration with one fresh seed, full epochs, no pruning; every outcome ends its run
        (out of memory: FAILED, and final only on the `last_try`, else the retrain's status is RETRY)."""
        cfg = base.replace(train={"seed": seed})
        data, names = resolve_dataset(cfg.data), class_names(cfg.data)
        self.console.print(f"confirm trial {trial.number} seed {key[1]}/{self.settings.seeds} (seed {seed}): "
                           f"{cfg.train.epochs} epochs" + (", again after running out of memory" if last_try else ""))
        retrain: Retrain | None = None
        try:
            run_id = self.runs.start(key, seed, cfg, trial.value)
            result = fit(cfg, data, on_epoch_end=lambda record: self.runs.log_epoch(run_id, record, names))
            if not math.isfinite(result.best_miou):
                raise NonFiniteLossError("no finite validation mIoU")
            retrain = self.runs.finish(run_id, key, seed, cfg, result, data, names)
        except NonFiniteLossError as err:
            retrain = self.runs.fail(run_id, key, seed, f"nan: {err}")
        except torch.OutOfMemoryError:
            pass  # handled below, outside the except block that pins the tensors
        except KeyboardInterrupt:
            self.runs.abort("interrupted", "KILLED")
            raise
        except Exception as err:  # a bug: the run says why, and a rerun tries again
            self.runs.abort(f"error: {type(err).__name__}: {err}", "FAILED")
            raise
        if retrain is None:  # out of memory
            release_device_memory(resolve_device(cfg.train.device), drop_caches=True)
            why = ", again: final" if last_try else "; retried once, after the other retrains"
            retrain = self.runs.fail(run_id, key, seed, f"oom: out of memory (batch {cfg.train.batch_size}){why}",
                                     final=last_try)
        outcome = (f"final {retrain.final:.4f}, best {retrain.best:.4f}" if retrain.status == "FINISHED"
                   else "out of memory: retried after the other retrains" if retrain.status == RETRY
                   else f"{retrain.status.lower()}")
        self.console.print(f"  -> {outcome}  (MLflow run {retrain.run_id})")
        return retrain

    def save(self, top: list[optuna.trial.FrozenTrial], seeds: list[int], done: dict[Key, Retrain]) -> dict[str, Any]:
        """The record, rewritten on the study (never cut in half by a signal)."""
        configs = [summarize(t, [r for k, r in done.items() if k[0] == t.number and k[1] <= len(seeds)])
                   for t in top]
        complete = all((t.number, i) in done for t in top for i in range(1, len(seeds) + 1))
        # One length for every retrain when --epochs or --seconds set it (--seconds: if they came out equal).
        lengths = set(self.epochs.values())
        sized = self.settings.epochs is not None or self.settings.seconds is not None
        epochs = lengths.pop() if sized and len(lengths) == 1 else None
        record = {"top": len(top), "seeds": seeds, "epochs": epochs, "rank_by": RANK_BY,
                  "complete": complete, "configs": ranked(configs, self.maximize, len(seeds)), "champion": None}
        if self.kept:
            record["kept_baseline"] = self.kept
        with deferred_signals():
            self.study.set_user_attr(CONFIRM_ATTR, record)
        return record

    def crown(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Move `champion` to the first-ranked configuration's best retrain (all seeds finished, if any)."""
        winner = record["configs"][0] if record["configs"] else None
        retrain = best_retrain(winner, self.maximize) if winner else None
        if retrain is None:
            return None
        name = self.study.study_name
        version = crown_confirmed(registry_client(self.settings.tracking_uri), name, winner, retrain)
        champion = {"trial": winner["trial"], "run_id": retrain["run_id"], "seed": retrain["seed"],
                    "version": version.version, "model": champion_uri(name)}
        with deferred_signals():
            self.study.set_user_attr(CONFIRM_ATTR, {**record, "champion": champion})
        return champion
