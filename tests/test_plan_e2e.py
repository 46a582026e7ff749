"""`search.run --data DIR` with no `--study` on each of the five generated datasets: it plans, logs the plan
to the study's MLflow run, runs 2 one-epoch trials with the class names in the metric names, and a rerun
resumes with the stored plan. Checked through Optuna's and MLflow's own clients."""

from __future__ import annotations

import json
import signal
from html import escape
from pathlib import Path

import optuna
import pytest
import tomllib
from mlflow.tracking import MlflowClient

from search.plan.command import main as plan_main
from search.plan.stored import FINGERPRINT_ATTR, PLAN_ATTR
from search.predict import main as predict_main
from search.report.study_report import main as report_main
from search.run import main as run_main
from search.study.definition import parse_study
from search.tracking.epoch_metrics import metric_class_names
from tests.plankit import VOC_CLASSES
from tests.studykit import seed_tracking_db

COMPLETE = optuna.trial.TrialState.COMPLETE


class Stores:
    def __init__(self, root: Path) -> None:
        self.storage = f"sqlite:///{root}/optuna.db"
        self.tracking_uri = f"sqlite:///{root}/mlruns/mlflow.db"
        seed_tracking_db(root / "mlruns" / "mlflow.db")
        self.client = MlflowClient(self.tracking_uri)

    def run(self, *args: str) -> int:
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            return run_main([*args, "--storage", self.storage, "--tracking-uri", self.tracking_uri, "--device", "cpu"])
        finally:
            signal.signal(signal.SIGTERM, sigterm)

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def artifact(self, run_id: str, path: str) -> str:
        return Path(self.client.download_artifacts(run_id, path)).read_text()


@pytest.mark.parametrize("name", ["tiny", "large", "three", "voc", "dominant"])
def test_run_without_a_study_plans_logs_the_plan_and_trains(plan_datasets, tmp_path, name):
    stores = Stores(tmp_path)
    # The plan's time budget: 600-900 px validation images (large) and VOC's widely varying sizes need a few
    # seconds an epoch even for the narrowest UNet, so those get more, enough for a busy machine (a CI run
    # beside a benchmark planned voc at 60 s as "not even the narrowest UNet fits").
    timeout = "150" if name in ("large", "voc") else "60"
    assert stores.run("--data", str(plan_datasets[name]), "--trials", "2", "--epochs", "1", "--timeout", timeout,
                      "--confirm", "0") == 0  # the plan's final training: tests/test_final_training.py
    study = stores.study(f"plan-{name}")
    assert [t.state for t in study.trials] == [COMPLETE, COMPLETE]
    text = study.user_attrs[PLAN_ATTR]
    sdef = parse_study(tomllib.loads(text), Path("plan.toml"))
    assert sdef.name == f"plan-{name}" and sdef.data["root"] == str(plan_datasets[name].resolve())
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert stores.artifact(parent, "plan/study.toml") == text
    fingerprint = json.loads(stores.artifact(parent, "plan/fingerprint.json"))
    assert fingerprint == study.user_attrs[FINGERPRINT_ATTR] and fingerprint["counts"]["train"] > 0
    assert stores.client.get_run(parent).data.params["study_file"].endswith(f"plans/plan-{name}.toml")
    k = sdef.data["num_classes"]
    names = metric_class_names(VOC_CLASSES) if name == "voc" else [str(i) for i in range(k)]
    for trial in study.trials:
        run = stores.client.get_run(trial.user_attrs["mlflow_run_id"])
        ious = {m for m in run.data.metrics if m.startswith("iou/")}
        assert ious and ious <= {f"iou/{n}" for n in names}, ious
        assert run.data.params["data.num_classes"] == str(k)
    if name == "voc":
        assert "iou/background" in ious and "iou/tv_monitor" in {f"iou/{n}" for n in names}
        assert json.loads(run.data.params["data.class_names"].replace("'", '"')) == list(VOC_CLASSES)
        _names_in_report_and_legend(stores, plan_datasets[name], tmp_path)


def _names_in_report_and_legend(stores: Stores, root: Path, tmp_path: Path) -> None:
    """The report's per-class table and the predictions' legend name the classes of classes.txt."""
    read = ["--study", "plan-voc", "--storage", stores.storage, "--tracking-uri", stores.tracking_uri]
    assert report_main([*read, "--out", str(tmp_path / "voc.html"), "--no-log"]) == 0
    html = (tmp_path / "voc.html").read_text()
    assert all(f"<td>{escape(n)}</td>" in html for n in VOC_CLASSES), "every class named in the report"
    out = tmp_path / "predictions"
    assert predict_main([*read, "--device", "cpu", "--out", str(out), str(root / "val" / "images")]) == 0
    legend = json.loads((out / "classes-legend.json").read_text())
    assert [c["name"] for c in legend["classes"]] == list(VOC_CLASSES)


def test_a_rerun_resumes_with_the_stored_plan(plan_datasets, tmp_path, capsys):
    stores = Stores(tmp_path)
    args = ("--data", str(plan_datasets["three"]), "--epochs", "1", "--timeout", "60", "--confirm", "0")
    assert stores.run(*args, "--trials", "1") == 0
    first = stores.study("plan-three").user_attrs[PLAN_ATTR]
    plan_file = tmp_path / "plans" / "plan-three.toml"
    plan_file.write_text("# edited by hand\n" + plan_file.read_text())
    capsys.readouterr()
    assert stores.run(*args, "--trials", "1", "--timeout", "3600") == 0  # another budget: still not re-planned
    out = capsys.readouterr().out.replace("\n", " ")
    assert "resuming with its stored plan (not re-planned)" in out and "The plan" not in out
    study = stores.study("plan-three")
    assert study.user_attrs[PLAN_ATTR] == first and len(study.trials) == 2
    assert plan_file.read_text().startswith("# edited by hand"), "the user's copy is left alone"


def test_a_plan_for_an_absent_gpu_runs_on_cpu_and_an_explicit_study_wins(plan_datasets, tmp_path):
    plan_file = tmp_path / "gpu.toml"
    assert plan_main(["--data", str(plan_datasets["tiny"]), "--device", "cuda", "--memory-gb", "24",
                      "--out", str(plan_file)]) == 0
    stores = Stores(tmp_path)
    assert stores.run("--study", str(plan_file), "--data", str(plan_datasets["tiny"]), "--trials", "1",
                      "--epochs", "1") == 0
    study = stores.study("plan-tiny")
    assert study.trials[0].state == COMPLETE
    assert PLAN_ATTR not in study.user_attrs, "--study names the definition: nothing is planned"
