"""Everything before the first trial of a run, in order, and the tracking wrap-up after the last.

definition (a study file, or with `--data` and no `--study` a plan: `search.plan.stored`) ->
dataset (validated and decoded once) -> fingerprint -> MLflow schema -> Optuna storage and study
-> MLflow parent run (with the dataset among its inputs) -> the `TrialContext` every trial shares.

The parent (or only) process creates both schemas, the study and its parent run, and ends the
MLflow runs that dead workers left RUNNING; a worker (`--worker-index`) joins what exists.
Bad input here (a study file, a dataset, a changed study) is the user's to fix: a clear error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from rich.console import Console

from search.objective import TrialContext
from search.plan.stored import StoredPlan, planned_definition, store_plan
from search.settings import RunSettings
from search.study.definition import StudyDef, load_study
from search.study.identity import DATASET_ATTR, check_dataset, check_identity, dataset_identity
from search.study.quota import BASELINE_ATTR
from search.study.samplers_pruners import build_pruner, build_sampler, format_pruner
from search.study.stale import StaleTrialHandler, reconcile_orphaned_runs
from search.study.storage import check_shared_storage, open_storage
from search.tracking.client import (
    EXPERIMENT_URL_ATTR,
    PARENT_RUN_ATTR,
    Tracker,
    TrackingUnavailable,
    ensure_tracking_schema,
    git_commit,
    ui_url,
)
from search.tracking.datasets import dataset_inputs, split_datasets
from search.tracking.figures import log_study_plots
from search.tracking.fingerprint import dataset_fingerprint
from search.tracking.trial_run import StudyTracking
from search.workers import derive_seed
from seg.config import DataConfig
from seg.loaders import class_names, resolve_dataset


def apply_overrides(sdef: StudyDef, settings: RunSettings) -> StudyDef:
    """The definition as this run uses it: name, sampler, pruner and epochs from the command line."""
    # The file's other keys hold for its own sampler or pruner only: `--pruner median` is Optuna's median.
    sampler = sdef.sampler
    if settings.sampler and settings.sampler != sdef.sampler["name"]:
        sampler = {"name": settings.sampler}
    pruner = sdef.pruner
    if settings.pruner:
        same = settings.pruner["name"] == sdef.pruner["name"]
        pruner = {**sdef.pruner, **settings.pruner} if same else dict(settings.pruner)
    return replace(sdef, name=settings.study_name or sdef.name, sampler=sampler, pruner=pruner,
                   max_epochs=settings.epochs or sdef.max_epochs)


def definition(settings: RunSettings, console: Console) -> tuple[StudyDef, StoredPlan | None]:
    """The study file `--study` names (default: studies/default.toml), or with `--data` and no `--study`
    the study planned for that dataset (the stored plan when the study exists)."""
    if settings.study is None and settings.data:
        plan = planned_definition(settings.data, settings.storage, study_name=settings.study_name,
                                  device=settings.device, memory_gb=settings.memory_limit_gb,
                                  timeout=settings.timeout, worker=settings.is_worker, console=console,
                                  workers=settings.workers)
        return apply_overrides(plan.sdef, settings), plan
    return apply_overrides(load_study(settings.study or "default"), settings), None


def open_study(sdef: StudyDef, settings: RunSettings, dataset: dict[str, Any] | None = None,
               tracker: Tracker | None = None, folder: bool = True) -> optuna.Study:
    """Create or resume the study; refuse one stored from another definition, or one that ran on other
    data than `dataset` (its identity; `folder`: a folder dataset, which the study records, else the
    embedded one, checked only against a study that recorded a folder). A refused study is left exactly
    as it was."""
    stale = StaleTrialHandler(settings.tracking_uri, settings.grace_period) if settings.heartbeat_interval else None
    storage = open_storage(settings.storage, settings.heartbeat_interval, settings.grace_period, stale)
    seed = derive_seed(settings.seed, settings.worker_index or 0)
    study = optuna.create_study(study_name=sdef.name, storage=storage, direction=sdef.direction,
                                sampler=build_sampler(sdef.sampler, seed),
                                pruner=build_pruner(sdef.pruner, sdef.max_epochs), load_if_exists=True)
    check_identity(study, sdef)
    if dataset is not None and (folder or study.user_attrs.get(DATASET_ATTR)):
        check_dataset(study, dataset, stored_dataset(study, tracker), record=folder and not settings.is_worker)
    if not settings.is_worker and study.metric_names != [sdef.metric]:
        study.set_metric_names([sdef.metric])  # optuna-dashboard then labels its axes "val_miou"
    if not settings.is_worker and sdef.baseline and not settings.no_baseline and not study.trials:
        study.enqueue_trial(sdef.baseline, user_attrs={BASELINE_ATTR: True})
    return study


def stored_dataset(study: optuna.Study, tracker: Tracker | None) -> dict[str, Any] | None:
    """The data the study ran on: its user attr, else (a study from before the attr) the content hash its
    MLflow parent run was tagged with, else None."""
    stored = study.user_attrs.get(DATASET_ATTR)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if stored is not None or tracker is None or not parent:
        return stored
    try:
        run = tracker.client.get_run(parent)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # the run was deleted: nothing is known
        raise TrackingUnavailable(f"tracking store {tracker.tracking_uri}: {err}") from err
    tag = run.data.tags.get("dataset_hash")
    if tag is None:
        return None
    params = run.data.params
    return {"root": f"(not stored; see MLflow run {parent})", "content_hash": tag,
            "counts": {"train": params.get("dataset_train", "?"), "val": params.get("dataset_val", "?")}}


def start_parent_run(tracker: Tracker, study: optuna.Study, sdef: StudyDef, fingerprint: dict[str, Any],
                     tags: dict[str, str], plan: StoredPlan | None = None) -> tuple[str, str]:
    """One parent run per study: created on the first run, reopened when the study resumes."""
    experiment_id = tracker.experiment_id(sdef.name)
    existing = study.user_attrs.get(PARENT_RUN_ATTR)
    if existing:
        return experiment_id, tracker.reopen_run(existing)
    run_id = tracker.start_run(experiment_id, f"study-{sdef.name}", tags)
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    tracker.log_params(run_id, {
        "study_name": sdef.name, "study_file": str(sdef.path), "direction": sdef.direction, "metric": sdef.metric,
        "max_epochs": sdef.max_epochs, "pruner": format_pruner(sdef.pruner),
        "dataset_train": fingerprint["counts"]["train"], "dataset_val": fingerprint["counts"]["val"]})
    tracker.log_dict(run_id, fingerprint, "dataset_fingerprint.json")
    tracker.log_dict(run_id, sdef.identity(), "study_definition.json")
    if plan is not None:
        tracker.log_text(run_id, plan.text, "plan/study.toml")
        tracker.log_dict(run_id, plan.fingerprint, "plan/fingerprint.json")
    return experiment_id, run_id


def prepare(settings: RunSettings, console: Console | None = None) -> tuple[optuna.Study, TrialContext]:
    """The study and the context its trials share, with both stores ready."""
    sdef, plan = definition(settings, console or Console())
    if not settings.is_worker:
        check_shared_storage(settings.storage, settings.workers)
    if sdef.data_required and not (settings.data or sdef.data.get("root")):
        raise ValueError(f"study {sdef.path} trains on a folder dataset: pass --data /path/to/dataset "
                         "(ROOT/train/images, ROOT/train/labels, ROOT/val/images, ROOT/val/labels)")
    opts = settings.trial_options(sdef.max_epochs, sdef.trial_timeout_s)
    data_cfg = DataConfig(**{**sdef.data, **({"root": settings.data} if settings.data else {})})
    data = resolve_dataset(data_cfg)  # validated and decoded once, before any trial
    fingerprint = dataset_fingerprint(data)
    names = class_names(data_cfg)
    datasets = split_datasets(data_cfg, fingerprint, names)
    if not settings.is_worker:
        ensure_tracking_schema(settings.tracking_uri)
    tracker = Tracker(settings.tracking_uri)
    # A folder dataset is part of the study: resuming on other data is refused (the embedded dataset is
    # generated from the definition's [data] keys).
    study = open_study(sdef, settings, dataset_identity(fingerprint), tracker, folder=data_cfg.root is not None)
    if plan is not None and not settings.is_worker:
        store_plan(study, plan)
    tags = {"sampler": sdef.sampler["name"], "pruner": sdef.pruner["name"], "storage": settings.storage,
            "study_name": sdef.name, "dataset_hash": fingerprint["content_hash"],
            "git_commit": git_commit() or "unknown"}
    if settings.is_worker:
        tags["worker"] = str(settings.worker_index)
        experiment_id, parent = tracker.experiment_id(sdef.name), study.user_attrs[PARENT_RUN_ATTR]
    else:
        experiment_id, parent = start_parent_run(tracker, study, sdef, fingerprint, tags, plan)
        tracker.log_inputs(parent, dataset_inputs(datasets))
        url = ui_url(settings.tracking_uri, experiment_id)
        if url and study.user_attrs.get(EXPERIMENT_URL_ATTR) != url:
            study.set_user_attr(EXPERIMENT_URL_ATTR, url)
        reconcile_orphaned_runs(tracker, experiment_id, study.get_trials(deepcopy=False))
    tracking = StudyTracking(tracker, experiment_id, parent, tags, datasets=dataset_inputs(datasets),
                             validation=(datasets["val"].name, datasets["val"].digest),
                             system_metrics_s=settings.system_metrics_s)
    return study, TrialContext(sdef, opts, data, names, tracking)


def finish_tracking(ctx: TrialContext, study: optuna.Study, status: str, plots: bool) -> None:
    """Study plots on the parent run, then end every run this process opened (none left RUNNING)."""
    if ctx.tracking.error is not None:
        return  # the store is gone: the next start reconciles the runs it could not end
    try:
        if plots:
            log_study_plots(ctx.tracking.tracker, ctx.tracking.parent_run_id, study)
        ctx.tracking.tracker.close_open_runs(status)
    except TrackingUnavailable as err:
        ctx.tracking.error = str(err)
