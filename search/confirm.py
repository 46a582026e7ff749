"""Confirm a study's best trials before crowning one: retrain the top K configurations with S fresh seeds.

    python -m search.confirm --study default --top 3 --seeds 3
    python -m search.confirm --study seed --top 3 --seeds 5 --storage URL --tracking-uri URI --device cuda
    python -m search.run --trials 50 --confirm 3          # the same, right after the search
    python -m search.confirm --study default --top 1 --seeds 1 --epochs 120   # the best, trained longer
    python -m search.confirm --study default --top 1 --seeds 1 --seconds 900  # ... for as long as 15 minutes allow
    python -m search.confirm --study plan-x --top 1 --seeds 1 --margin 0.05  # the [baseline] unless beaten by > 0.05

A search's best trial is partly a lucky draw (its seed, its best epoch). This retrains the top K
complete trials' configurations (each trial's `config` user attr) from scratch with S fresh training
seeds each (`--margin M`: the [baseline] trial ranks as if M better, so a trial replaces it only by a
lead above M), for their full epochs (`--epochs N`: a final, longer training, schedule stretched) and
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
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.markup import escape

from search.confirm_retrains import Confirmation, ConfirmSettings, top_trials
from search.display import print_confirmation
from search.registry import RegistryError, champion_uri
from search.settings import configure_process
from search.study.lookup import StudyNotFoundError, load_named_study
from search.study.quota import lock_path_for
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, PARENT_RUN_ATTR, Tracker, TrackingUnavailable
from search.tracking.confirm_run import ConfirmRuns
from seg.data import DatasetError

EXIT_REGISTRY, EXIT_USAGE, EXIT_TRACKING = 1, 2, 3


class ConfirmError(ValueError):
    """Bad input: the study cannot be confirmed (the message says why)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the retrain in progress ends KILLED; exit code 143."""


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
    p.add_argument("--margin", type=float, default=0.0,
                   help="another trial goes ahead of the [baseline] trial only by leading its value by more than "
                        "this (a planned study's [confirm] margin; search.run passes it)")
    try:
        return ConfirmSettings(**vars(p.parse_args(argv)))
    except ValueError as err:
        p.error(str(err))


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
    top = top_trials(study, settings.top, settings.margin)
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
