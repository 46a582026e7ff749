"""Confirm a study's best trials before crowning one: retrain the top K configurations with S fresh seeds.

    python -m search.confirm --study default --top 3 --seeds 3
    python -m search.confirm --study seed --top 3 --seeds 5 --storage URL --tracking-uri URI --device cuda
    python -m search.run --trials 50 --confirm 3          # the same, right after the search
    python -m search.confirm --study default --top 1 --seeds 1 --epochs 120   # the best, trained longer
    python -m search.confirm --study default --top 1 --seeds 1 --seconds 900  # ... for as long as 15 minutes allow

A search's best trial is partly a lucky draw (its seed, its best epoch). This retrains the top K
complete trials' configurations (each trial's `config` user attr) from scratch with S fresh training
seeds each, for their full epochs (`--epochs N`: a final, longer training, schedule stretched) and
without pruning, each as a child run of the study's parent MLflow run named `confirm-007-seed-2`
with its per-epoch curves. Each configuration gets a confirmed mean ± sd of its final val mIoU and
of its best; `champion` then moves to the best confirmed mean (by the final value; configurations
with every seed finished rank above the others, which read "k of S seeds"), its best retrain's
model, tagged with mean, sd and seeds. The study's `confirm` user attr keeps the record, which the
summary, `search.report` and `search.ui` show. A retrain out of device memory (another process may
hold it) is retried once, after the others, also by a rerun (its first run ends FAILED,
`confirm_state=RETRY`); it is final only if it repeats.

Resume-safe: rerunning the command does only what is missing (the FINISHED runs are the record);
an interrupted retrain's run ends KILLED, and one a killed process left RUNNING is ended KILLED by
the next confirm. One confirm per study at a time on a machine (a lock file says so).
Exit codes: 0 done, 1 the registry step failed (rerun to repair), 2 bad input, 3 the tracking store
stopped answering, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.markup import escape

from search.display import print_confirmation
from search.guards.signals import deferred_signals
from search.registry import RegistryError, champion_uri, crown_confirmed, registry_client
from search.settings import configure_process
from search.study.confirm_record import CONFIRM_ATTR, RANK_BY, best_retrain, confirm_seeds, ranked, summarize
from search.study.lookup import StudyNotFoundError, load_named_study
from search.study.quota import EPOCHS_ATTR, lock_path_for
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, PARENT_RUN_ATTR, Tracker, TrackingUnavailable
from search.tracking.confirm_run import RETRY, ConfirmRuns, Key, Retrain
from seg.config import Config
from seg.data import DatasetError
from seg.loaders import class_names, resolve_dataset
from seg.memory import release_device_memory
from seg.runtime import resolve_device
from seg.train import NonFiniteLossError, fit

COMPLETE = optuna.trial.TrialState.COMPLETE
EXIT_REGISTRY, EXIT_USAGE, EXIT_TRACKING = 1, 2, 3


class ConfirmError(ValueError):
    """Bad input: the study cannot be confirmed (the message says why)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the retrain in progress ends KILLED; exit code 143."""


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

    def __post_init__(self) -> None:
        if self.top < 1 or self.seeds < 1:
            raise ValueError(f"--top {self.top} --seeds {self.seeds}: expected positive numbers")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: expected a positive number of epochs")
        if self.seconds is not None and not self.seconds >= 0:
            raise ValueError(f"--seconds {self.seconds}: expected a number of seconds >= 0")
        if self.epochs is not None and self.seconds is not None:
            raise ValueError(f"--epochs {self.epochs} --seconds {self.seconds:g}: give one of them")


def parse_args(argv: list[str] | None) -> ConfirmSettings:
    p = argparse.ArgumentParser(prog="python -m search.confirm", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", required=True, help="study name in the Optuna storage (as search.run's summary says)")
    p.add_argument("--top", type=int, default=3, help="retrain this many of the best complete trials")
    p.add_argument("--seeds", type=int, default=3, help="fresh training seeds per configuration")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking (and registry) URI")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data", help="dataset folder, if the study's folder dataset is no longer where it was")
    p.add_argument("--epochs", type=int, help="train each retrain this many epochs (schedule included), not its "
                                              "trial's: a final, longer training; other lengths are not reused")
    p.add_argument("--seconds", type=float, help="instead of --epochs: the retrains share this many seconds, each "
                                                 "as many epochs as fit at its trial's measured seconds an epoch "
                                                 "(never fewer than its trial's)")
    try:
        return ConfirmSettings(**vars(p.parse_args(argv)))
    except ValueError as err:
        p.error(str(err))


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The k best complete trials that hold their config (ties: the earlier trial first)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,))
                if t.value is not None and "config" in t.user_attrs]
    return sorted(complete, key=lambda t: (sign * t.value, t.number))[:k]


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

    def run(self, top: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
        seeds = confirm_seeds(self.settings.seeds)
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


@contextmanager
def confirm_lock(settings: ConfirmSettings) -> Iterator[None]:
    """One confirm of a study at a time on this machine: two would retrain the same seeds."""
    path = lock_path_for(settings.storage, f"{settings.study}.confirm")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfirmError(f"another search.confirm of study {settings.study!r} is running on this machine "
                               f"(lock {path}); wait for it, it does the same work") from None
        yield
    finally:
        os.close(fd)


def load(settings: ConfirmSettings) -> tuple[optuna.Study, str, list[optuna.trial.FrozenTrial]]:
    study = load_named_study(settings.study, settings.storage)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if not parent:
        raise ConfirmError(f"study {settings.study!r} has no {PARENT_RUN_ATTR} user attr (no MLflow parent run): "
                           "it was not created by python -m search.run")
    top = top_trials(study, settings.top)
    if not top:
        raise ConfirmError(f"study {settings.study!r} has no complete trial with a config to confirm")
    return study, parent, top


def run_confirm(settings: ConfirmSettings, console: Console | None = None) -> int:
    """Confirm, crown, print; Ctrl-C and SIGTERM propagate after the retrain in progress is ended KILLED."""
    console = console or Console()
    err = Console(stderr=True)
    try:
        study, parent, top = load(settings)
    except (StudyNotFoundError, ConfirmError) as exc:
        err.print("[red]error:[/red]", escape(str(exc)))
        return EXIT_USAGE
    console.print(f"\nconfirming the top {len(top)} trials of study {study.study_name!r} "
                  f"({[t.number for t in top]}) with {settings.seeds} fresh seeds each"
                  + (f", {settings.epochs} epochs each" if settings.epochs else "")
                  + (f", as many epochs as fit in {settings.seconds:.0f} s" if settings.seconds is not None else ""))
    tracker = Tracker(settings.tracking_uri)
    try:
        with confirm_lock(settings):
            runs = ConfirmRuns(tracker, tracker.experiment_id(study.study_name), parent, study.study_name)
            confirmation = Confirmation(study, settings, runs, console)
            record = confirmation.run(top)
            try:
                record["champion"] = confirmation.crown(record)
            except (MlflowException, RegistryError, OSError) as exc:
                print_confirmation(console, record)
                err.print(f"[red]error:[/red] could not move {champion_uri(study.study_name)}: {escape(str(exc))}; "
                          "rerun the same command to repair it (nothing is retrained)")
                return EXIT_REGISTRY
    except (ConfirmError, DatasetError) as exc:
        err.print("[red]error:[/red]", escape(str(exc)))
        if isinstance(exc, DatasetError):
            err.print("The study's dataset is not where it was: pass its folder with --data.")
        return EXIT_USAGE
    except TrackingUnavailable as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}\nRerun the same command once the tracking store answers: "
                  "it retrains only what is missing.")
        return EXIT_TRACKING
    finally:
        try:
            tracker.close_open_runs("KILLED")
        except TrackingUnavailable:
            pass  # the next confirm ends what is left RUNNING
    print_confirmation(console, record)
    return 0


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    configure_process()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run_confirm(settings)
    except Terminated:
        print("terminated (SIGTERM): the retrain in progress is KILLED; rerun to finish", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted: the retrain in progress is KILLED; rerun to finish", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
