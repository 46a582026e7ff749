"""The test-set figures (`python -m search.evaluate`) of the study's best trial and of its confirmed
champion, read from their MLflow runs: test mIoU, pixel accuracy, per-class IoU and the test folder."""

from __future__ import annotations

import optuna
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from search.report.html import Section, note, table
from search.study.confirm_record import read_record
from search.tracking.client import RUN_ID_ATTR
from search.tracking.epoch_metrics import metric_class_names
from search.tracking.evaluation_log import IOU_PREFIX, MIOU, PIXEL_ACC, TEST_CONTEXT

NOT_EVALUATED = ("Not scored on a test set: every figure above is on the validation split, which chose the "
                 "best epoch and the best trial. `python -m search.evaluate --study {name} --data TESTDIR "
                 "--out DIR` scores the best trial on a labelled folder it never saw.")


def evaluated_runs(client: MlflowClient, study: optuna.Study,
                   best: optuna.trial.FrozenTrial | None) -> list[tuple[str, Run]]:
    """(label, run) of the best trial and the confirmed champion whose runs hold `test_miou`."""
    candidates = []
    if best is not None and best.user_attrs.get(RUN_ID_ATTR):
        candidates.append((f"best trial {best.number}", best.user_attrs[RUN_ID_ATTR]))
    champion = ((read_record(study) or {}).get("champion") or {})
    if champion.get("run_id"):
        candidates.append((f"confirmed champion (trial {champion['trial']}, seed {champion.get('seed')})",
                           champion["run_id"]))
    runs = []
    for label, run_id in candidates:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue
        if MIOU in run.data.metrics:
            runs.append((label, run))
    return runs


def test_folders(run: Run) -> str:
    names = [f"{d.dataset.name} ({d.dataset.digest})" for d in (run.inputs.dataset_inputs if run.inputs else [])
             if any(t.key == MLFLOW_DATASET_CONTEXT and t.value == TEST_CONTEXT for t in d.tags)]
    return ", ".join(dict.fromkeys(names)) or "-"


def evaluation_section(client: MlflowClient, study: optuna.Study, best: optuna.trial.FrozenTrial | None,
                       class_names: list[str] | None = None) -> Section:
    title = "Test set"
    runs = evaluated_runs(client, study, best)
    if not runs:
        return Section("test-set", title, note(NOT_EVALUATED.format(name=study.study_name)))
    rows = [[label, f"{run.data.metrics[MIOU]:.4f}", f"{run.data.metrics.get(PIXEL_ACC, float('nan')):.4f}",
             test_folders(run), run.info.run_id] for label, run in runs]
    logged = {k[len(IOU_PREFIX):] for _, run in runs for k in run.data.metrics if k.startswith(IOU_PREFIX)}
    order = metric_class_names(tuple(class_names)) if class_names else []  # the classes' own order first
    classes = [n for n in order if n in logged] + sorted(logged - set(order))
    per_class = [[name, *(_fmt(run.data.metrics.get(IOU_PREFIX + name)) for _, run in runs)] for name in classes]
    intro = ("<p>Scored by <code>search.evaluate</code> on a labelled folder outside the search (the latest "
             "evaluation of each run); unlike the validation figures, no choice was made on these images. "
             "Classes absent from both truth and prediction have no IoU and are left out of the mean.</p>")
    header = ["model", "test mIoU", "test pixel accuracy", "test folder (digest)", "MLflow run"]
    iou_header = ["class", *(f"IoU, {label}" for label, _ in runs)]
    body = (intro + table(header, rows, numeric={1, 2})
            + table(iou_header, per_class, numeric=set(range(1, len(runs) + 1))))
    return Section("test-set", title, body)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
