"""Search for the best UNet: an Optuna study whose trials train with `seg.fit`, tracked in MLflow.

    python -m search.run --trials 50                      # the default study, embedded dataset
    python -m search.run --study seed --data /path/data   # the report's study on a folder dataset

    python -m search.run --workers 4 --storage studies/optuna.journal --trials 50   # 4 processes, 50 trials in all
    python -m search.run --storage postgresql://USER@HOST/DB --tracking-uri http://HOST:5000 --total-trials 200
                                                          # the same command on every machine of a shared study

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
from dataclasses import replace
from typing import Any

import optuna
from rich.console import Console
from rich.markup import escape

from search.display import LiveDisplay, print_summary
from search.fingerprint import dataset_fingerprint
from search.objective import Objective, TrialContext, TrialFailed
from search.plots import log_study_plots
from search.quota import TrialQuota, counted_trials, lock_path_for
from search.registry import ChampionCallback
from search.samplers import build_pruner, build_sampler, format_pruner, pruner_arg
from search.space import RunOptions
from search.stale import StaleTrialHandler, reconcile_orphaned_runs
from search.storage import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    StudyMismatchError,
    check_identity,
    check_shared_storage,
    ensure_tracking_schema,
    open_storage,
)
from search.study_def import SAMPLERS, StudyDef, load_study
from search.tracking import Tracker, TrackingUnavailable, git_commit
from search.workers import WorkerPool, derive_seed, describe_exit
from seg.config import DataConfig
from seg.loaders import class_names, resolve_dataset

PARENT_RUN_ATTR = "mlflow_parent_run_id"
EXIT_TRACKING = 3  # the tracking store stopped answering; Optuna's results are kept


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs; exit code 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, help="trials this run adds, across all its workers (default: the study "
                   "file's budget.trials); 0 only creates the schemas, the study and its parent run")
    p.add_argument("--total-trials", type=int, help="instead of --trials: stop when the study holds this many trials "
                   "(give every machine of a multi-machine study the same number)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (GPUs shared round-robin); "
                   "more than one needs a journal file or PostgreSQL storage")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--trial-timeout", type=float, help="fail a trial that runs longer than this many seconds "
                   "(default: the study's budget.trial_timeout_s; none)")
    p.add_argument("--memory-limit-gb", type=float, help="reject configs whose estimated training memory exceeds "
                   "this (default on CUDA: the device's free memory; on CPU: no check)")
    p.add_argument("--study", default="default", help="study file, or the name of one in studies/")
    p.add_argument("--study-name", help="name of the study in the storage (default: the file's study.name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL (sqlite, postgresql) or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                   help="MLflow tracking URI; a sqlite URI keeps artifacts in an 'artifacts' folder beside the DB")
    p.add_argument("--data", help="dataset folder (ROOT/train|val/images|labels); default: the study's dataset")
    p.add_argument("--sampler", choices=SAMPLERS, help="override the study's sampler")
    p.add_argument("--pruner", type=pruner_arg, metavar="NAME[:KEY=VALUE,...]",
                   help="override the study's pruner: hyperband, sha, median, percentile or none, with settings "
                        "as in [pruner], e.g. percentile:percentile=40.0,n_startup_trials=3")
    p.add_argument("--epochs", type=int, help="max epochs per trial (default: the study's budget.max_epochs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (worker i derives its own); trial n trains with seed+n")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats; 0 turns "
                   "stale-trial detection off")
    p.add_argument("--grace", type=int, help="seconds without a heartbeat after which a trial is stale: failed, its "
                   "MLflow run KILLED, and retried once with the same params (default: 3 x --heartbeat)")
    p.add_argument("--no-baseline", action="store_true", help="do not enqueue the study's [baseline] as the first trial")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its children
    p.add_argument("--target-total", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("trials", "total_trials", "workers", "heartbeat", "grace"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "workers" else 0):
            p.error(f"--{name.replace('_', '-')} {value}: expected a {'positive' if name == 'workers' else 'non-negative'} number")
    if args.trials is not None and args.total_trials is not None:
        p.error("give --trials (trials to add) or --total-trials (trials the study should hold), not both")
    return args


def apply_overrides(sdef: StudyDef, args: argparse.Namespace) -> StudyDef:
    sampler = {**sdef.sampler, "name": args.sampler} if args.sampler else sdef.sampler
    pruner = sdef.pruner
    if args.pruner:  # the file's other keys hold for its own pruner only: `--pruner median` is Optuna's median
        pruner = {**sdef.pruner, **args.pruner} if args.pruner["name"] == sdef.pruner["name"] else args.pruner
    return replace(sdef, name=args.study_name or sdef.name, sampler=sampler, pruner=pruner,
                   max_epochs=args.epochs or sdef.max_epochs)


def open_study(sdef: StudyDef, args: argparse.Namespace) -> optuna.Study:
    heartbeat = args.heartbeat or None
    grace = (args.grace or 3 * args.heartbeat) if heartbeat else None
    storage = open_storage(args.storage, heartbeat, grace,
                           StaleTrialHandler(args.tracking_uri, grace) if heartbeat else None)
    seed = derive_seed(args.seed, args.worker_index or 0)
    study = optuna.create_study(study_name=sdef.name, storage=storage, direction=sdef.direction,
                                sampler=build_sampler(sdef.sampler, seed),
                                pruner=build_pruner(sdef.pruner, sdef.max_epochs), load_if_exists=True)
    check_identity(study, sdef)
    if args.worker_index is None and study.metric_names != [sdef.metric]:
        study.set_metric_names([sdef.metric])  # optuna-dashboard then labels its axes "val_miou"
    if args.worker_index is None and sdef.baseline and not args.no_baseline and not study.trials:
        study.enqueue_trial(sdef.baseline, user_attrs={"baseline": True})
    return study


def start_parent_run(tracker: Tracker, study: optuna.Study, sdef: StudyDef, fingerprint: dict[str, Any],
                     tags: dict[str, str]) -> tuple[str, str]:
    """One parent run per study: created on the first run, reopened when the study resumes."""
    experiment_id = tracker.experiment_id(sdef.name)
    existing = study.user_attrs.get(PARENT_RUN_ATTR)
    if existing:
        return experiment_id, tracker.reopen_run(existing)
    run_id = tracker.start_run(experiment_id, f"study-{sdef.name}", tags)
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    tracker.log_params(run_id, {"study_name": sdef.name, "study_file": str(sdef.path), "direction": sdef.direction,
                                "metric": sdef.metric, "max_epochs": sdef.max_epochs, "pruner": format_pruner(sdef.pruner),
                                "dataset_train": fingerprint["counts"]["train"], "dataset_val": fingerprint["counts"]["val"]})
    tracker.log_dict(run_id, fingerprint, "dataset_fingerprint.json")
    tracker.log_dict(run_id, sdef.identity(), "study_definition.json")
    return experiment_id, run_id


def prepare(args: argparse.Namespace) -> tuple[optuna.Study, TrialContext]:
    """Everything before the first trial: definition, data, fingerprint, storages, study, parent run.

    The parent (or only) process creates both schemas, the study and its parent run, and ends the
    MLflow runs that dead workers left RUNNING; a worker (`--worker-index`) joins what exists.
    Bad input here (a study file, a dataset, a changed study) is the user's to fix: a clear error.
    """
    sdef = apply_overrides(load_study(args.study), args)
    worker = args.worker_index is not None
    if not worker:
        check_shared_storage(args.storage, args.workers)
    if sdef.data_required and not (args.data or sdef.data.get("root")):
        raise ValueError(f"study {sdef.path} trains on a folder dataset: pass --data /path/to/dataset "
                         "(ROOT/train/images, ROOT/train/labels, ROOT/val/images, ROOT/val/labels)")
    opts = RunOptions(data_root=args.data, epochs=sdef.max_epochs, device=args.device, seed=args.seed,
                      trial_timeout_s=args.trial_timeout or sdef.trial_timeout_s, memory_limit_gb=args.memory_limit_gb)
    data_cfg = DataConfig(**{**sdef.data, **({"root": args.data} if args.data else {})})
    data = resolve_dataset(data_cfg)  # validated and decoded once, before any trial
    fingerprint = dataset_fingerprint(data)
    if not worker:
        ensure_tracking_schema(args.tracking_uri)
    study = open_study(sdef, args)
    tracker = Tracker(args.tracking_uri)
    tags = {"sampler": sdef.sampler["name"], "pruner": sdef.pruner["name"], "storage": args.storage,
            "study_name": sdef.name, "dataset_hash": fingerprint["content_hash"], "git_commit": git_commit() or "unknown"}
    if worker:
        tags["worker"] = str(args.worker_index)
        experiment_id, parent = tracker.experiment_id(sdef.name), study.user_attrs[PARENT_RUN_ATTR]
    else:
        experiment_id, parent = start_parent_run(tracker, study, sdef, fingerprint, tags)
        reconcile_orphaned_runs(tracker, experiment_id, study.get_trials(deepcopy=False))
    return study, TrialContext(sdef, opts, data, class_names(data_cfg), tracker, experiment_id, parent, tags)


def trial_target(study: optuna.Study, args: argparse.Namespace, sdef_trials: int) -> int:
    """How many counted trials the study should hold when this run is done (see search/quota.py)."""
    if args.target_total is not None:
        return args.target_total
    if args.total_trials is not None:
        return args.total_trials
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    return counted_trials(finished) + (sdef_trials if args.trials is None else args.trials)


class AfterTrial:
    """Optuna callback: champion model, then stop on a dead tracking store, else claim the next slot."""

    def __init__(self, ctx: TrialContext, quota: TrialQuota, tracking_uri: str) -> None:
        self.ctx, self.quota = ctx, quota
        self.champion = ChampionCallback(tracking_uri, ctx.sdef.name)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.ctx.tracking_error is not None:
            study.stop()
            return
        self.champion(study, trial)
        self.quota.after_trial(study, trial)


def optimize(study: optuna.Study, ctx: TrialContext, args: argparse.Namespace, target: int,
             display_callback: Any) -> None:
    """Trials until the study holds `target` counted trials (shared with the other workers)."""
    if args.trials == 0:
        return  # set-up only: schemas, study and parent run exist now
    quota = TrialQuota(study, target, lock_path_for(args.storage, study.study_name), wait_for_running=args.heartbeat > 0)
    ctx.on_trial_start = quota.release
    try:
        if quota.claim():
            study.optimize(Objective(ctx), n_trials=None, timeout=args.timeout or ctx.sdef.timeout_s,
                           catch=(TrialFailed,), callbacks=[display_callback, AfterTrial(ctx, quota, args.tracking_uri)],
                           gc_after_trial=False)
    finally:
        quota.release()


def execute(study: optuna.Study, ctx: TrialContext, args: argparse.Namespace, console: Console, target: int) -> int:
    """Run the trials in this process; whatever happens, end every MLflow run this process opened."""
    sdef = ctx.sdef
    worker = args.worker_index is not None
    start = time.monotonic()
    status = "FAILED"
    try:
        label = f"worker {args.worker_index}" if worker else None
        with LiveDisplay(study, ctx.progress, console, label=label) as display:
            optimize(study, ctx, args, target, display.trial_finished)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        finish_tracking(ctx, study, status, plots=not worker and status == "FINISHED")
        if not worker:
            print_summary(console, study, args.storage, args.tracking_uri, str(sdef.path), time.monotonic() - start)
    return tracking_failed(ctx, study, console) if ctx.tracking_error else 0


def finish_tracking(ctx: TrialContext, study: optuna.Study, status: str, plots: bool) -> None:
    """Study plots on the parent run, then end every run this process opened (none left RUNNING)."""
    if ctx.tracking_error is not None:
        return  # the store is gone: the next start reconciles the runs it could not end
    try:
        if plots:
            log_study_plots(ctx.tracker, ctx.parent_run_id, study)
        ctx.tracker.close_open_runs(status)
    except TrackingUnavailable as err:
        ctx.tracking_error = str(err)


def tracking_failed(ctx: TrialContext, study: optuna.Study, console: Console) -> int:
    done = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tracking_error")]
    Console(stderr=True).print(
        f"[red]error:[/red] {escape(ctx.tracking_error or '')}\nThe study stopped. Optuna kept every result "
        f"(trials {done} finished while MLflow was unreachable; their runs are ended or marked when this command "
        "runs again). Rerun the same command once the tracking server answers.")
    return EXIT_TRACKING


def run_workers(args: argparse.Namespace, argv: list[str], study: optuna.Study, ctx: TrialContext,
                target: int, console: Console) -> int:
    """Start the workers, wait for them, then plots and the end of the parent run (here, once)."""
    start = time.monotonic()
    console.print(f"{args.workers} workers on study {study.study_name!r} ({args.storage}), until it holds {target} trials")
    pool = WorkerPool.start(argv, args.workers, target, args.device)
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
        print_summary(console, study, args.storage, args.tracking_uri, str(ctx.sdef.path), time.monotonic() - start)
    for i, code in enumerate(codes):
        if code != 0:
            Console(stderr=True).print(f"[red]{describe_exit(i, code)}[/red]: rerun the same command to resume; "
                                       "a trial it left RUNNING is failed and retried after the grace period.")
    return next((c if c > 0 else 1 for c in codes if c != 0), 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console()
    # ERROR: a trial's expected failure (oom, nan, timeout...) is shown once by the display, not as a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        study, ctx = prepare(args)
        target = trial_target(study, args, ctx.sdef.trials)
    except (StudyMismatchError, FileNotFoundError, ValueError, TrackingUnavailable) as err:
        Console(stderr=True).print("[red]error:[/red]", escape(str(err)))
        return 2
    try:
        if args.workers > 1 and args.worker_index is None:
            return run_workers(args, argv, study, ctx, target, console)
        return execute(study, ctx, args, console, target)
    except Terminated:
        console.print("[red]terminated (SIGTERM): the trial in progress is FAIL, its MLflow run KILLED[/red]")
        return 143
    except KeyboardInterrupt:
        console.print("[red]interrupted: the trial in progress is FAIL, its MLflow run KILLED[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
