"""Search for the best UNet: an Optuna study whose trials train with `seg.fit`, tracked in MLflow.

    python -m search.run --trials 50                      # the default study, embedded dataset
    python -m search.run --study seed --data /path/data   # the report's study on a folder dataset

Rerunning the same command resumes the study and adds trials. Compare runs with
`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db` and watch pruning with
`optuna-dashboard sqlite:///studies/optuna.db`.
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

from seg.config import DataConfig
from seg.loaders import class_names, resolve_dataset

from search.display import LiveDisplay, print_summary
from search.fingerprint import dataset_fingerprint
from search.objective import Objective, TrialContext, TrialFailed
from search.plots import log_study_plots
from search.registry import ChampionCallback
from search.samplers import build_pruner, build_sampler
from search.space import RunOptions
from search.storage import (DEFAULT_STORAGE, DEFAULT_TRACKING_URI, StudyMismatchError, check_identity,
                            ensure_tracking_schema, open_storage)
from search.study_def import PRUNERS, SAMPLERS, StudyDef, load_study
from search.tracking import Tracker, git_commit

PARENT_RUN_ATTR = "mlflow_parent_run_id"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs; exit code 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, help="trials to add in this run (default: the study file's budget.trials)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--study", default="default", help="study file, or the name of one in studies/")
    p.add_argument("--study-name", help="name of the study in the storage (default: the file's study.name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL (sqlite, postgresql) or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                   help="MLflow tracking URI; a sqlite URI keeps artifacts in an 'artifacts' folder beside the DB")
    p.add_argument("--data", help="dataset folder (ROOT/train|val/images|labels); default: the study's dataset")
    p.add_argument("--sampler", choices=SAMPLERS, help="override the study's sampler")
    p.add_argument("--pruner", choices=PRUNERS, help="override the study's pruner")
    p.add_argument("--epochs", type=int, help="max epochs per trial (default: the study's budget.max_epochs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="sampler seed; trial n trains with seed+n")
    p.add_argument("--no-baseline", action="store_true", help="do not enqueue the study's [baseline] as the first trial")
    return p.parse_args(argv)


def apply_overrides(sdef: StudyDef, args: argparse.Namespace) -> StudyDef:
    sampler = {**sdef.sampler, "name": args.sampler} if args.sampler else sdef.sampler
    pruner = {**sdef.pruner, "name": args.pruner} if args.pruner else sdef.pruner
    return replace(sdef, name=args.study_name or sdef.name, sampler=sampler, pruner=pruner,
                   max_epochs=args.epochs or sdef.max_epochs)


def open_study(sdef: StudyDef, args: argparse.Namespace) -> optuna.Study:
    storage = open_storage(args.storage)
    study = optuna.create_study(study_name=sdef.name, storage=storage, direction=sdef.direction,
                                sampler=build_sampler(sdef.sampler, args.seed),
                                pruner=build_pruner(sdef.pruner, sdef.max_epochs), load_if_exists=True)
    check_identity(study, sdef)
    if sdef.baseline and not args.no_baseline and not study.trials:
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
                                "metric": sdef.metric, "max_epochs": sdef.max_epochs,
                                "dataset_train": fingerprint["counts"]["train"], "dataset_val": fingerprint["counts"]["val"]})
    tracker.log_dict(run_id, fingerprint, "dataset_fingerprint.json")
    tracker.log_dict(run_id, sdef.identity(), "study_definition.json")
    return experiment_id, run_id


def prepare(args: argparse.Namespace) -> tuple[optuna.Study, TrialContext]:
    """Everything before the first trial: definition, data, fingerprint, storages, study, parent run.

    Bad input here (a study file, a dataset, a changed study) is the user's to fix: a clear error.
    """
    sdef = apply_overrides(load_study(args.study), args)
    if sdef.data_required and not (args.data or sdef.data.get("root")):
        raise ValueError(f"study {sdef.path} trains on a folder dataset: pass --data /path/to/dataset "
                         "(ROOT/train/images, ROOT/train/labels, ROOT/val/images, ROOT/val/labels)")
    opts = RunOptions(data_root=args.data, epochs=sdef.max_epochs, device=args.device, seed=args.seed)
    data_cfg = DataConfig(**{**sdef.data, **({"root": args.data} if args.data else {})})
    data = resolve_dataset(data_cfg)  # validated and decoded once, before any trial
    fingerprint = dataset_fingerprint(data)
    ensure_tracking_schema(args.tracking_uri)
    study = open_study(sdef, args)
    tracker = Tracker(args.tracking_uri)
    tags = {"sampler": sdef.sampler["name"], "pruner": sdef.pruner["name"], "storage": args.storage,
            "study_name": sdef.name, "dataset_hash": fingerprint["content_hash"], "git_commit": git_commit() or "unknown"}
    experiment_id, parent = start_parent_run(tracker, study, sdef, fingerprint, tags)
    return study, TrialContext(sdef, opts, data, class_names(data_cfg), tracker, experiment_id, parent, tags)


def execute(study: optuna.Study, ctx: TrialContext, args: argparse.Namespace, console: Console) -> int:
    """Run the trials; whatever happens, end every MLflow run this process opened."""
    sdef, tracker, parent = ctx.sdef, ctx.tracker, ctx.parent_run_id
    start = time.monotonic()
    status = "FAILED"
    try:
        with LiveDisplay(study, ctx.progress, console) as display:
            study.optimize(Objective(ctx), n_trials=args.trials or sdef.trials, timeout=args.timeout or sdef.timeout_s,
                           catch=(TrialFailed,), callbacks=[display.trial_finished, ChampionCallback(args.tracking_uri, sdef.name)], gc_after_trial=False)
        log_study_plots(tracker, parent, study)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close_open_runs(status)
        print_summary(console, study, args.storage, args.tracking_uri, str(sdef.path), time.monotonic() - start)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        study, ctx = prepare(args)
    except (StudyMismatchError, FileNotFoundError, ValueError) as err:
        Console(stderr=True).print("[red]error:[/red]", escape(str(err)))
        return 2
    try:
        return execute(study, ctx, args, console)
    except Terminated:
        console.print("[red]terminated (SIGTERM): the trial in progress is FAIL, its MLflow run KILLED[/red]")
        return 143
    except KeyboardInterrupt:
        console.print("[red]interrupted: the trial in progress is FAIL, its MLflow run KILLED[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
