"""Search for the best UNet: an Optuna study whose trials train with `seg.fit`, tracked in MLflow.

    python -m search.run --trials 50                      # the default study, embedded dataset
    python -m search.run --data /path/data                # a study planned for your dataset and device
    python -m search.run --study seed --data /path/data   # the report's study on a folder dataset

    python -m search.run --workers 4 --storage studies/optuna.journal --trials 50   # 4 processes, 50 trials in all
    python -m search.run --storage postgresql://USER@HOST/DB --tracking-uri http://HOST:5000 --total-trials 200
                                                          # the same command on every machine of a shared study
    python -m search.run --total-epochs 230               # stop once the study's trials trained 230 epochs
    python -m search.run --trials 50 --confirm 3          # then retrain the top 3 with fresh seeds (search.confirm)

Rerunning the same command resumes the study and adds trials; a trial whose worker died is failed
and retried once after the heartbeat's grace period. Compare runs in the MLflow UI and watch
pruning in optuna-dashboard, both started by `python -m search.ui --study NAME`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from typing import Any

import optuna
from rich.console import Console
from rich.markup import escape

from search.budget_split import (
    confirm_plan,
    confirm_seconds,
    final_epochs,
    run_budget,
    run_timeout,
    set_up_took_the_search,
)
from search.confirm import run_confirm
from search.confirm_retrains import ConfirmSettings
from search.display import LiveDisplay, print_summary
from search.objective import Objective, TrialContext, TrialFailed
from search.plan.budget import FINAL_SHARE, SHORT_FINAL_SHARE
from search.registry import ChampionCallback
from search.session import finish_tracking, prepare
from search.settings import RunSettings, configure_process
from search.study.identity import StudyMismatchError
from search.study.quota import Budget, StudyQuota, SurplusTrial, lock_path_for
from search.study.samplers_pruners import SAMPLERS, pruner_arg
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, TrackingUnavailable
from search.tracking.system_metrics import DEFAULT_INTERVAL_S
from search.workers import WorkerPool, describe_exit

EXIT_TRACKING = 3  # the tracking store stopped answering; Optuna's results are kept


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs; exit code 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def parse_args(argv: list[str] | None = None) -> RunSettings:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, help="trials this run adds, across all its workers (default: the study "
                   "file's budget.trials); 0 only creates the schemas, the study and its parent run")
    p.add_argument("--total-trials", type=int, help="instead of --trials: stop when the study holds this many trials "
                   "(give every machine of a multi-machine study the same number)")
    p.add_argument("--total-epochs", type=int, help="stop starting trials once the study's trials have trained this "
                   "many epochs in all, pruned ones included (with --trials or --total-trials: whichever comes "
                   "first; alone, no trial limit). Default: the study file's budget")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (GPUs shared round-robin); "
                   "more than one needs a journal file or PostgreSQL storage")
    p.add_argument("--timeout", type=float, help="the command's time budget in seconds from its start (planning "
                   "included): no trial starts after it, or after 1 - share of it when the study's [confirm] share "
                   "keeps the rest to train the best configuration after the search (a planned study keeps "
                   f"{FINAL_SHARE:g} of a long budget, up to {SHORT_FINAL_SHARE:g} of a short one); "
                   "with --data and no --study also the budget the study is planned for (default: 1 hour)")
    p.add_argument("--trial-timeout", type=float, help="fail a trial that runs longer than this many seconds "
                   "(default: the study's budget.trial_timeout_s; none)")
    p.add_argument("--memory-limit-gb", type=float, help="reject configs whose estimated training memory exceeds "
                   "this (default on CUDA: the device's free memory; on CPU: no check)")
    p.add_argument("--study", help="the study definition: a TOML file, or the name of one in studies/ (the other "
                   "tools take the name in the storage, which --study-name sets); default: 'default', or with --data "
                   "a study planned for that dataset and device (python -m search.plan), resumed with its stored plan")
    p.add_argument("--study-name", help="the study's name in the storage, which the other tools' --study takes "
                   "(default: the definition's study.name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="Optuna storage URL (sqlite, postgresql) or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                   help="MLflow tracking URI; a sqlite URI keeps artifacts in an 'artifacts' folder beside the DB")
    p.add_argument("--data", help="dataset folder (ROOT/train|val/images|labels); default: the study's dataset")
    p.add_argument("--sampler", choices=list(SAMPLERS), help="override the study's sampler")
    p.add_argument("--pruner", type=pruner_arg, metavar="NAME[:KEY=VALUE,...]",
                   help="override the study's pruner: hyperband, sha, median, percentile or none, with settings "
                        "as in [pruner], e.g. percentile:percentile=40.0,n_startup_trials=3")
    p.add_argument("--epochs", type=int, help="max epochs per trial (default: the study's budget.max_epochs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0,
                   help="sampler seed (worker i derives its own); trial n trains with seed+n")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats; 0 turns "
                   "stale-trial detection off")
    p.add_argument("--grace", type=int, help="seconds without a heartbeat after which a trial is stale: failed, its "
                   "MLflow run KILLED, and retried once with the same params (default: 3 x --heartbeat)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not enqueue the study's [baseline] as the first trial")
    p.add_argument("--confirm", type=int, metavar="K", help="after the search, retrain the top K complete trials "
                   "with fresh seeds and crown the best confirmed mean (python -m search.confirm); 0: none "
                   "(default: the study's [confirm] top)")
    p.add_argument("--confirm-seeds", type=int, metavar="S", help="fresh seeds per confirmed configuration "
                   "(default: the study's [confirm] seeds, 3)")
    p.add_argument("--confirm-share", type=float, metavar="F", help="the part of the time (or epoch) budget kept "
                   "for those retrains, 0 <= F < 1 (default: the study's [confirm] share; a planned study keeps "
                   f"{FINAL_SHARE:g} of a long budget, up to {SHORT_FINAL_SHARE:g} of a short one)")
    p.add_argument("--system-metrics-interval", type=float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                   help="seconds between samples of each trial run's system metrics (CPU, memory, GPU)")
    p.add_argument("--no-system-metrics", action="store_true",
                   help="do not log system metrics (MLflow's system/* charts) on the trial runs")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its children
    p.add_argument("--target-total", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        return RunSettings(**vars(args))
    except ValueError as err:
        p.error(str(err))


class AfterTrial:
    """Optuna callback: champion model, then stop on a dead tracking store, else claim the next slot."""

    def __init__(self, ctx: TrialContext, quota: StudyQuota, tracking_uri: str) -> None:
        self.ctx, self.quota = ctx, quota
        self.champion = ChampionCallback(tracking_uri, ctx.sdef.name)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.ctx.tracking.error is not None:
            study.stop()
            return
        self.champion(study, trial)
        self.quota.after_trial(study, trial)


def optimize(study: optuna.Study, ctx: TrialContext, settings: RunSettings, budget: Budget,
             display_callback: Any) -> None:
    """Trials until the study meets its budget (shared with the other workers)."""
    if settings.trials == 0:
        return  # set-up only: schemas, study and parent run exist now
    quota = StudyQuota(study, budget, lock_path_for(settings.storage, study.study_name), ctx.sdef.max_epochs,
                       wait_for_running=settings.heartbeat > 0)
    ctx.on_trial_start = quota.start
    try:
        if quota.claim():
            study.optimize(Objective(ctx), n_trials=None, timeout=run_timeout(settings, ctx.sdef),
                           catch=(TrialFailed, SurplusTrial),
                           callbacks=[ctx.signal_hold.release, display_callback,
                                      AfterTrial(ctx, quota, settings.tracking_uri)],
                           gc_after_trial=False)
    finally:
        try:
            ctx.signal_hold.release()  # Optuna's tell raised, so no callback ran: deliver what was held
        finally:
            quota.release()


def execute(study: optuna.Study, ctx: TrialContext, settings: RunSettings, console: Console, budget: Budget) -> int:
    """Run the trials in this process; whatever happens, end every MLflow run this process opened."""
    worker = settings.is_worker
    start = time.monotonic()
    status = "FAILED"
    try:
        label = f"worker {settings.worker_index}" if worker else None
        with LiveDisplay(study, ctx.progress, console, label=label) as display:
            optimize(study, ctx, settings, budget, display.trial_finished)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        finish_tracking(ctx, study, status, plots=not worker and status == "FINISHED")
        if not worker:
            print_summary(console, study, settings.storage, settings.tracking_uri, time.monotonic() - start,
                          confirm_next=not confirm_plan(settings, ctx.sdef)[0])
    return tracking_failed(ctx, study, console) if ctx.tracking.error else 0


def tracking_failed(ctx: TrialContext, study: optuna.Study, console: Console) -> int:
    done = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tracking_error")]
    Console(stderr=True).print(
        f"[red]error:[/red] {escape(ctx.tracking.error or '')}\nThe study stopped. Optuna kept every result "
        f"(trials {done} finished while MLflow was unreachable; their runs are ended or marked when this command "
        "runs again). Rerun the same command once the tracking server answers.")
    return EXIT_TRACKING


def run_workers(settings: RunSettings, argv: list[str], study: optuna.Study, ctx: TrialContext,
                budget: Budget, console: Console) -> int:
    """Start the workers, wait for them, then plots and the end of the parent run (here, once)."""
    start = time.monotonic()
    console.print(f"{settings.workers} workers on study {study.study_name!r} ({settings.storage}), "
                  f"until {budget.describe()}")
    pool = WorkerPool.start(argv, settings.workers, budget.trials, settings.device, budget.epochs,
                            timeout=run_timeout(settings, ctx.sdef))
    status = "FAILED"
    try:
        codes = pool.wait()
        status = "FINISHED" if all(c == 0 for c in codes) else "FAILED"
    except Terminated:
        codes = pool.stop(signal.SIGTERM)
        status = "KILLED"
        raise
    except KeyboardInterrupt:
        codes = pool.stop(signal.SIGINT)
        status = "KILLED"
        raise
    finally:
        finish_tracking(ctx, study, status, plots=status == "FINISHED")
        print_summary(console, study, settings.storage, settings.tracking_uri, time.monotonic() - start,
                      confirm_next=not confirm_plan(settings, ctx.sdef)[0])
    for i, code in enumerate(codes):
        if code != 0:
            Console(stderr=True).print(f"[red]{describe_exit(i, code)}[/red]: rerun the same command to resume; "
                                       "a trial it left RUNNING is failed and retried after the grace period.")
    return next((c if c > 0 else 1 for c in codes if c != 0), 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    configure_process()
    console = Console()
    # ERROR: a trial's expected failure (oom, nan, timeout...) is shown once by the display, not as a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        study, ctx = prepare(settings, console)
        budget = run_budget(study, settings, ctx.sdef)
    except (StudyMismatchError, FileNotFoundError, ValueError, TrackingUnavailable) as err:
        Console(stderr=True).print("[red]error:[/red]", escape(str(err)))
        return 2
    # Known before any trial: the time budget ran out in planning and set-up.
    no_time = None if settings.is_worker or settings.trials == 0 else set_up_took_the_search(settings, ctx.sdef)
    try:
        if settings.workers > 1 and not settings.is_worker:
            rc = run_workers(settings, argv, study, ctx, budget, console)
        else:
            rc = execute(study, ctx, settings, console, budget)
        if no_time is not None:  # the budget did its job, so no error: say why nothing ran
            console.print(f"[yellow]{escape(no_time)}[/yellow]")
        top, seeds = confirm_plan(settings, ctx.sdef)
        if rc != 0 or settings.is_worker or not top or settings.trials == 0:
            return rc
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            console.print("[yellow]no complete trial: nothing to confirm or train further[/yellow]")
            return rc
        return run_confirm(ConfirmSettings(study.study_name, top, seeds, settings.storage, settings.tracking_uri,
                                           settings.device, settings.data,
                                           epochs=final_epochs(settings, ctx.sdef),
                                           seconds=confirm_seconds(settings, ctx.sdef),
                                           margin=ctx.sdef.confirm_margin), console)
    except Terminated:
        console.print("[red]terminated (SIGTERM): the trial (or retrain) in progress is FAIL, its MLflow run "
                      "KILLED[/red]")
        return 143
    except KeyboardInterrupt:
        console.print("[red]interrupted: the trial (or retrain) in progress is FAIL, its MLflow run KILLED[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
