"""End-to-end: a tiny Optuna study through `search.run`, checked through Optuna's and MLflow's own APIs.

One study runs once per module (module-scoped fixture) with real SQLite storages in a temp dir:

- study "e2e": 4 trials of 2 epochs on a tiny UNet (base 4, max 16 channels, depth 2-3, crop 32) over
  16 + 6 procedural images, no pruner. The study is pre-created with two enqueued trials: trial 0
  (depth 2) and trial 1 (depth 5: a 2 px bottleneck at crop 32, infeasible -> FAIL); trials 2 and 3
  are sampled by TPE. So: 3 COMPLETE, 1 FAIL, and trials after the failure still ran.
- study "e2e-pruned": 2 trials with the threshold pruner at `lower = 0.99`, so every trial is PRUNED
  after epoch 0 (deterministic); its first trial is the file's [baseline]. The file says `lower = 0.0`
  (never prunes): the 0.99 comes from `--pruner threshold:lower=0.99`, so the override is tested too.
  It runs with `--no-system-metrics`; "e2e" samples system metrics every 0.2 s.

Tests that change the stored state (resume, damaged checkpoint) leave the other assertions valid in
any order: the resume only adds a trial, and the damaged checkpoint is restored afterwards.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import optuna
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from PIL import Image

from search.evaluate import parse_args as evaluate_parse_args
from search.predict import main as predict_main
from search.registry import CHAMPION
from search.registry import main as registry_main
from search.report.study_report import main as report_main
from search.study.storage import open_storage
from seg.config import Config
from seg.predict import Predictor
from seg.synth import CLASSES
from tests.faultkit import cli_env, http_json, started_ui
from tests.studykit import PARENT_ATTR, PARENT_TAG, STATUS_FOR_STATE, TINY, StudyEnv, write_study

STUDY = "e2e"
PRUNED_STUDY = "e2e-pruned"
EPOCHS = 2
TRIALS = 4
FAILED_TRIAL = 1
EPOCH_METRICS = ("train_loss", "val_loss", "val_miou", "lr", "epoch_seconds", "images_per_s")
ENDED = {"FINISHED", "KILLED", "FAILED"}
TRAINING_VIEW = "workflowType=machine_learning"  # MLflow's UI opens a link with it on the runs table
SAMPLE_S = 0.2  # system metrics interval of the "e2e" study: several points in a trial of ~1 s

COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED
FAIL = optuna.trial.TrialState.FAIL

# The "e2e" study file: the default tiny study (tests/studykit.py), searched by TPE over depth and flips too.
STUDY_SPACE = {"model.depth": {"low": 2, "high": 3}, "transforms.hflip": {"choices": [0.0, 0.5]}}
STUDY_SETTINGS = dict(trials=TRIALS, epochs=EPOCHS, sampler="tpe", space=STUDY_SPACE)

ALWAYS_PRUNE = ("--pruner", "threshold:lower=0.99")  # over the file's lower = 0.0
PRUNED_SETTINGS = dict(trials=2, epochs=EPOCHS, pruner="threshold", pruner_settings={"lower": 0.0},
                       space={"model.upsample": None, "train.momentum": None},
                       baseline={"train.optimizer": "adam", "train.lr": 0.005})


@pytest.fixture(scope="module")
def e2e_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyEnv, dict[str, int]]]:
    """Both studies, run once: (their StudyEnv, search.run's exit code per study)."""
    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(root / "cache"))
        env = StudyEnv(root, STUDY, **STUDY_SETTINGS)
        # Pre-create the study: trial 0 is a normal one, trial 1 infeasible (depth 5 at crop 32).
        study = optuna.create_study(study_name=STUDY, storage=env.storage, direction="maximize")
        study.enqueue_trial({"model.depth": 2})
        study.enqueue_trial({"model.depth": 5})  # outside [2, 3] on purpose: Optuna warns and uses it
        codes = {STUDY: env.run("--system-metrics-interval", str(SAMPLE_S))}
        codes[PRUNED_STUDY] = env.run(*ALWAYS_PRUNE, "--no-system-metrics",
                                      file=env.write(PRUNED_STUDY, **PRUNED_SETTINGS))
        yield env, codes


@pytest.fixture(scope="module")
def e2e(e2e_runs: tuple[StudyEnv, dict[str, int]]) -> StudyEnv:
    return e2e_runs[0]


@pytest.fixture(scope="module")
def exit_codes(e2e_runs: tuple[StudyEnv, dict[str, int]]) -> dict[str, int]:
    return e2e_runs[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    """Odd-sized RGB inputs, PNG and JPEG: path -> (height, width)."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    sizes = {folder / "odd_a.png": (37, 53), folder / "odd_b.jpg": (64, 41), folder / "odd_c.png": (29, 30)}
    for path, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return {str(p): hw for p, hw in sizes.items()}


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(COMPLETE,))


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, int | None]:
    return {f.path: f.file_size for f in client.list_artifacts(run_id, path)}


def _local_artifact_dir(client: MlflowClient, run_id: str) -> Path:
    uri = client.get_run(run_id).info.artifact_uri
    parsed = urlparse(uri)
    assert parsed.scheme == "file", f"expected local artifacts beside the SQLite store, got {uri}"
    return Path(unquote(parsed.path))


# --------------------------------------------------------------------------- the study ran


def test_study_completes_with_complete_and_failed_trials(e2e: StudyEnv, exit_codes: dict[str, int]) -> None:
    assert exit_codes[STUDY] == 0
    trials = e2e.study().trials
    assert len(trials) >= TRIALS
    states = [t.state for t in trials[:TRIALS]]
    assert states[FAILED_TRIAL] == FAIL
    assert states.count(COMPLETE) == TRIALS - 1
    # The study went on after the failed trial.
    assert any(t.state == COMPLETE for t in trials if t.number > FAILED_TRIAL)


def test_experiment_named_after_study_with_one_child_run_per_trial(e2e: StudyEnv) -> None:
    study, client = e2e.study(), e2e.client
    exp = client.get_experiment_by_name(STUDY)
    assert exp is not None and exp.name == STUDY
    parent = client.get_run(study.user_attrs[PARENT_ATTR])
    assert parent.info.experiment_id == exp.experiment_id
    assert PARENT_TAG not in parent.data.tags
    children = e2e.children()
    per_trial: dict[int, list[str]] = {}
    for run in children:
        per_trial.setdefault(int(run.data.tags["trial_number"]), []).append(run.info.run_id)
    assert sorted(per_trial) == [t.number for t in study.trials]
    for t in study.trials:
        assert per_trial[t.number] == [t.user_attrs["mlflow_run_id"]], f"trial {t.number}"
    # Every run of the experiment is the parent or one of its children.
    assert {r.info.run_id for r in e2e.runs()} == {parent.info.run_id} | {r.info.run_id for r in children}


def test_trial_run_links_resolve(e2e: StudyEnv) -> None:
    client, exp_id, parent_id = e2e.client, e2e.experiment_id(), e2e.parent_id()
    for t in e2e.study().trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.experiment_id == exp_id
        assert run.data.tags[PARENT_TAG] == parent_id
        assert run.data.tags["trial_number"] == str(t.number)
        assert run.info.status == STATUS_FOR_STATE[t.state.name]
        label = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned"}[t.state.name]
        assert run.info.run_name == f"trial-{t.number:03d}-{label}"
        if t.state == COMPLETE:
            assert run.data.params["trial_number"] == str(t.number)


def test_params_are_complete_and_match_the_trial_config(e2e: StudyEnv) -> None:
    expected_keys = set(Config().flatten()) | {"trial_number", "study_name"}
    for t in _complete(e2e.study()):
        params = e2e.client.get_run(t.user_attrs["mlflow_run_id"]).data.params
        assert expected_keys <= set(params), sorted(expected_keys - set(params))
        assert params["study_name"] == STUDY
        cfg = Config.from_dict(t.user_attrs["config"])
        for key, value in cfg.flatten().items():
            assert params[key] == ("None" if value is None else str(value)), key
        for name, value in t.params.items():  # what Optuna sampled is what was trained and logged
            assert params[name] == str(value), name
        assert params["model.base_channels"] == "4" and params["model.max_channels"] == "16"
        assert params["transforms.crop_size"] == "32" and params["train.epochs"] == str(EPOCHS)


def test_per_epoch_metrics_have_one_step_per_epoch(e2e: StudyEnv) -> None:
    client = e2e.client
    for t in _complete(e2e.study()):
        run_id = t.user_attrs["mlflow_run_id"]
        assert t.user_attrs["epochs_trained"] == EPOCHS
        for name in EPOCH_METRICS:
            steps = [m.step for m in client.get_metric_history(run_id, name)]
            assert sorted(steps) == list(range(EPOCHS)), (t.number, name, steps)
        history = {m.step: m.value for m in client.get_metric_history(run_id, "val_miou")}
        # MLflow steps are 0-based epochs; Optuna's step is the resource, epochs completed.
        assert {step + 1: v for step, v in history.items()} == pytest.approx(t.intermediate_values)
        assert t.value == pytest.approx(max(history.values()))
        iou = {k for k in client.get_run(run_id).data.metrics if k.startswith("iou/")}
        assert iou, f"trial {t.number}: no per-class iou/<class> metric"
        assert {k.removeprefix("iou/") for k in iou} <= set(CLASSES)
        for key in sorted(iou)[:2]:
            assert [m.step for m in client.get_metric_history(run_id, key)] != []


def test_failed_trial_has_reason_in_optuna_and_mlflow(e2e: StudyEnv, exit_codes: dict[str, int]) -> None:
    assert exit_codes[STUDY] == 0
    t = e2e.study().trials[FAILED_TRIAL]
    assert t.state == FAIL and t.params["model.depth"] == 5
    reason = t.user_attrs["fail_reason"]
    assert reason.startswith("infeasible") and "bottleneck" in reason
    run = e2e.client.get_run(t.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["fail_reason"] == reason
    assert run.data.tags["trial_state"] == "FAIL"
    assert not [k for k in run.data.metrics if not k.startswith("system/")]  # rejected before any training


def test_pruned_trials_are_killed_runs(e2e: StudyEnv, exit_codes: dict[str, int]) -> None:
    assert exit_codes[PRUNED_STUDY] == 0
    study, client = e2e.study(PRUNED_STUDY), e2e.client
    assert len(study.trials) == 2 and all(t.state == PRUNED for t in study.trials)
    assert study.trials[0].user_attrs.get("baseline") is True
    assert study.trials[0].params["train.optimizer"] == "adam"
    assert study.trials[0].params["train.lr"] == pytest.approx(0.005)
    parent_id = study.user_attrs[PARENT_ATTR]
    assert parent_id != e2e.parent_id()  # its own parent run, in its own experiment
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert client.get_run(parent_id).data.params["pruner"] == "threshold:lower=0.99"  # the override, not the file
    for t in study.trials:
        assert t.user_attrs["epochs_trained"] == 1
        assert list(t.intermediate_values) == [1]
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED"
        assert run.info.run_name == f"trial-{t.number:03d}-pruned"
        assert run.data.tags[PARENT_TAG] == parent_id
        assert run.data.tags["trial_state"] == "PRUNED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [0]
        assert "checkpoint" not in _artifacts(client, run.info.run_id)  # only complete trials log artifacts


def test_the_last_epoch_is_never_pruned(e2e: StudyEnv) -> None:
    # The same always-pruning threshold, but one epoch per trial: pruning after the last epoch would
    # save nothing and throw the finished result away, so the trial completes.
    name = "e2e-last-epoch"
    assert e2e.run(*ALWAYS_PRUNE, "--study-name", name, "--epochs", "1", "--trials", "1", "--no-baseline",
                   file=e2e.root / f"{PRUNED_STUDY}.toml") == 0
    (trial,) = e2e.study(name).trials
    assert trial.state == COMPLETE and list(trial.intermediate_values) == [1] and trial.value < 0.99
    assert e2e.client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "FINISHED"


def test_no_run_is_left_running(e2e: StudyEnv) -> None:
    for name in (STUDY, PRUNED_STUDY):
        statuses = {r.info.run_id: r.info.status for r in e2e.runs(name)}
        assert statuses and set(statuses.values()) <= ENDED, statuses
        assert statuses[e2e.parent_id(name)] == "FINISHED"


def test_complete_trials_have_artifacts(e2e: StudyEnv) -> None:
    client = e2e.client
    complete = _complete(e2e.study())
    assert len(complete) >= 2
    for t in complete:
        run_id = t.user_attrs["mlflow_run_id"]
        assert client.get_run(run_id).info.status == "FINISHED"
        top = _artifacts(client, run_id)
        assert "config.json" in top
        for folder, name in [("checkpoint", "checkpoint/best.pt"), ("overlays", "overlays/val_predictions.png"),
                             ("metrics", "metrics/iou_confusion.png")]:
            files = _artifacts(client, run_id, folder)
            assert name in files, (t.number, sorted(files))
            assert files[name], f"trial {t.number}: {name} is empty"
        local = _local_artifact_dir(client, run_id)
        assert json.loads((local / "config.json").read_text()) == t.user_attrs["config"]
        # The model is a LoggedModel of the run: among its outputs, READY, with its files and an input example.
        (output,) = client.get_run(run_id).outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert (model.name, model.source_run_id, model.status) == ("model", run_id, LoggedModelStatus.READY)
        files = Path(unquote(urlparse(model.artifact_location).path))
        assert (files / "MLmodel").is_file() and (files / "serving_input_example.json").is_file()
        assert model.params["model.base_channels"] == "4" and model.tags["trial_number"] == str(t.number)


def test_logged_models_rank_by_val_miou(e2e: StudyEnv) -> None:
    """`search_logged_models` ranks the study's models by val_miou: the trials' values, best first."""
    complete = sorted(_complete(e2e.study()), key=lambda t: t.value, reverse=True)
    models = e2e.client.search_logged_models([e2e.experiment_id()],
                                             order_by=[{"field_name": "metrics.val_miou", "ascending": False}])
    assert [m.source_run_id for m in models] == [t.user_attrs["mlflow_run_id"] for t in complete]
    for model, trial in zip(models, complete):
        (miou,) = [m for m in model.metrics if m.key == "val_miou"]
        assert miou.value == pytest.approx(trial.value) and miou.step == trial.user_attrs["best_epoch"]
        assert miou.dataset_name == "embedded/val"
    # The model's points are the run's own, not a second copy in its history.
    best_run = complete[0].user_attrs["mlflow_run_id"]
    assert len(e2e.client.get_metric_history(best_run, "val_miou")) == EPOCHS


def test_trial_runs_have_system_metrics_until_they_end(e2e: StudyEnv) -> None:
    for t in e2e.study().trials:
        if t.state == COMPLETE:
            cpu = e2e.client.get_metric_history(t.user_attrs["mlflow_run_id"], "system/cpu_utilization_percentage")
            assert len(cpu) >= 2, (t.number, cpu)
            assert "system/system_memory_usage_percentage" in e2e.trial_run(t).data.metrics
    for t in e2e.study(PRUNED_STUDY).trials:  # --no-system-metrics
        assert not [k for k in e2e.trial_run(t).data.metrics if k.startswith("system/")]
    # Every monitor stopped with its run (complete, failed and pruned alike): no sampling thread is left.
    assert not [th for th in threading.enumerate() if th.name == "SystemMetricsMonitor"]


def test_the_dataset_is_an_input_of_the_parent_and_every_trial_run(e2e: StudyEnv, tmp_path: Path) -> None:
    client, parent_id = e2e.client, e2e.parent_id()
    fingerprint = json.loads(Path(client.download_artifacts(parent_id, "dataset_fingerprint.json",
                                                            str(tmp_path))).read_text())
    runs = [client.get_run(parent_id)] + [e2e.trial_run(t) for t in e2e.study().trials]
    for run in runs:
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"embedded/train", "embedded/val"}, run.info.run_name
        for split, context in [("train", "training"), ("val", "validation")]:
            item = inputs[f"embedded/{split}"]
            assert item.dataset.digest == fingerprint["content_hash"]
            assert {tag.key: tag.value for tag in item.tags}["mlflow.data.context"] == context
            assert item.dataset.source_type == "code" and json.loads(item.dataset.source)["tags"]["seed"] == 0
            profile = json.loads(item.dataset.profile)
            assert profile["images"] == fingerprint["counts"][split] and profile["num_classes"] == 10
            assert list(profile["class_pixel_frequency"]) == list(CLASSES)


def test_the_experiment_opens_in_the_training_view(e2e: StudyEnv) -> None:
    exp = e2e.client.get_experiment(e2e.experiment_id())
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # Not a tracking server: no UI URLs in the user attrs.
    assert "mlflow_experiment_url" not in e2e.study().user_attrs
    assert not [t.number for t in e2e.study().trials if "mlflow_run_url" in t.user_attrs]


def test_parent_run_has_study_plots_and_fingerprint(e2e: StudyEnv, tmp_path: Path) -> None:
    client, parent_id = e2e.client, e2e.parent_id()
    plots = _artifacts(client, parent_id, "plots")
    for name in ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate"):
        assert plots.get(f"plots/{name}.png"), sorted(plots)
    top = _artifacts(client, parent_id)
    assert "dataset_fingerprint.json" in top and "study_definition.json" in top
    local = client.download_artifacts(parent_id, "dataset_fingerprint.json", str(tmp_path))
    fingerprint = json.loads(Path(local).read_text())
    assert fingerprint["counts"] == {"train": 16, "val": 6}
    assert fingerprint["num_classes"] == 10
    run = client.get_run(parent_id)
    assert run.data.params["study_name"] == STUDY and run.data.params["dataset_train"] == "16"
    assert run.data.tags["dataset_hash"] == fingerprint["content_hash"]
    assert run.data.tags["sampler"] == "tpe" and run.data.tags["pruner"] == "none"


# --------------------------------------------------------------------------- predict and pyfunc


def test_predict_best_trial_writes_masks_at_input_size(e2e: StudyEnv, images: dict[str, tuple[int, int]],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pred"
    assert predict_main(e2e.predict_args(out, *images)) == 0
    best = e2e.study().best_trial
    assert f"trial {best.number}" in capsys.readouterr().out
    for path, (h, w) in images.items():
        stem = Path(path).stem
        mask = Image.open(out / f"{stem}.png")
        assert mask.size == (w, h) and mask.mode == "P"
        assert np.asarray(mask).max() < 10
        assert Image.open(out / f"{stem}_overlay.png").size == (w, h)


def test_predict_chosen_trial_and_missing_trial(e2e: StudyEnv, images: dict[str, tuple[int, int]], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    study = e2e.study()
    chosen = next(t for t in _complete(study) if t.number != study.best_trial.number)
    image = next(iter(images))
    h, w = images[image]
    out = tmp_path / "chosen"
    assert predict_main(e2e.predict_args(out, "--trial", str(chosen.number), image)) == 0
    assert f"trial {chosen.number}" in capsys.readouterr().out
    assert Image.open(out / f"{Path(image).stem}.png").size == (w, h)

    assert predict_main(e2e.predict_args(tmp_path / "none", "--trial", "999", image)) == 2
    assert "999" in capsys.readouterr().err
    assert predict_main(e2e.predict_args(tmp_path / "failed", "--trial", str(FAILED_TRIAL), image)) == 2
    err = capsys.readouterr().err
    assert f"trial {FAILED_TRIAL}" in err and "FAIL" in err
    assert not (tmp_path / "none").exists() and not (tmp_path / "failed").exists()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_checkpoint_gives_clear_error(e2e: StudyEnv, images: dict[str, tuple[int, int]], tmp_path: Path,
                                              capsys: pytest.CaptureFixture, damage: str) -> None:
    best = e2e.study().best_trial
    run_id = best.user_attrs["mlflow_run_id"]
    ckpt = _local_artifact_dir(e2e.client, run_id) / "checkpoint" / "best.pt"
    backup = tmp_path / "best.pt.bak"
    shutil.copy2(ckpt, backup)
    out = tmp_path / "pred"
    try:
        if damage == "truncate":
            ckpt.write_bytes(ckpt.read_bytes()[:200])
        else:
            ckpt.unlink()
        assert predict_main(e2e.predict_args(out, *images)) == 2
    finally:
        shutil.copy2(backup, ckpt)
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert run_id in err and "best.pt" in err, err
    assert not out.exists()


@pytest.mark.parametrize("allow_pickle", [None, "false"])
def test_pyfunc_model_loads_and_predicts(e2e: StudyEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         allow_pickle: str | None) -> None:
    if allow_pickle is None:
        monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    else:  # models-from-code: no pickle is needed to load it
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", allow_pickle)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_model prepends the model's code/ folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", e2e.tracking_uri)  # restored after; set_tracking_uri writes it
    best_run = e2e.study().best_trial.user_attrs["mlflow_run_id"]
    mlflow.set_tracking_uri(e2e.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{best_run}/model")
    finally:
        mlflow.set_tracking_uri(None)
    zeros = model.predict(np.zeros((2, 37, 53, 3), np.uint8))
    assert zeros.shape == (2, 37, 53) and zeros.dtype == np.uint8

    # Same labels as the checkpoint through seg.predict.
    image = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    labels = model.predict(image[None])
    ckpt = e2e.client.download_artifacts(best_run, "checkpoint/best.pt", str(tmp_path))
    expected = Predictor.from_path(ckpt, device="cpu").predict(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    np.testing.assert_array_equal(labels[0], expected.numpy())


# --------------------------------------------------------------------------- resume and refusal


def test_rerun_resumes_the_study_with_the_same_parent_run(e2e: StudyEnv) -> None:
    before = e2e.study()
    n_before, parent_before = len(before.trials), before.user_attrs[PARENT_ATTR]
    e2e.client.delete_experiment_tag(e2e.experiment_id(), "mlflow.experimentKind")  # an experiment from before
    assert e2e.run("--trials", "1") == 0
    assert e2e.client.get_experiment(e2e.experiment_id()).tags["mlflow.experimentKind"] == "custom_model_development"
    after = e2e.study()
    assert len(after.trials) == n_before + 1
    assert after.user_attrs[PARENT_ATTR] == parent_before
    parents = [r for r in e2e.runs() if PARENT_TAG not in r.data.tags]
    assert [r.info.run_id for r in parents] == [parent_before]
    assert parents[0].info.status == "FINISHED"
    new = after.trials[-1]
    assert new.state in (COMPLETE, FAIL) and new.number == n_before
    run = e2e.client.get_run(new.user_attrs["mlflow_run_id"])
    assert run.data.tags[PARENT_TAG] == parent_before and run.info.status in ENDED
    assert len(e2e.children()) == len(after.trials)


def test_changed_study_file_is_refused(e2e: StudyEnv, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    changed = write_study(tmp_path, STUDY, **{**STUDY_SETTINGS,
                                              "space": {**STUDY_SPACE, "model.depth": {"low": 2, "high": 4}}})
    text = changed.read_text()
    assert text != e2e.file.read_text()
    n_trials, n_runs = len(e2e.study().trials), len(e2e.runs())
    capsys.readouterr()
    assert e2e.run("--trials", "1", file=changed) == 2
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())  # rich wraps long lines
    assert "model.depth" in out and STUDY in out and "different definition" in out
    assert len(e2e.study().trials) == n_trials
    assert len(e2e.runs()) == n_runs
    assert e2e.client.get_run(e2e.parent_id()).info.status == "FINISHED"


# --------------------------------------------------------------------------- one word, one meaning


@pytest.mark.slow
def test_the_study_name_set_by_run_is_the_study_of_every_read_side_tool(
        tmp_path: Path, images: dict[str, tuple[int, int]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """`search.run --study FILE --study-name bar`, then `--study bar` in search.predict, search.report,
    search.registry and search.ui, and the predict command search.run prints, run as printed."""
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path / "stores", "foo", trials=2, epochs=1, **TINY)  # the definition is named "foo"
    assert env.run("--study-name", "bar") == 0
    printed = capsys.readouterr().out
    assert optuna.get_all_study_names(open_storage(env.storage)) == ["bar"]  # stored under --study-name only
    best = env.study("bar").best_trial
    best_run = best.user_attrs["mlflow_run_id"]

    # search.predict --study bar IMAGES --out DIR
    out = tmp_path / "pred"
    assert predict_main(env.predict_args(out, *images, name="bar")) == 0, capsys.readouterr().err
    assert f"trial {best.number}" in capsys.readouterr().out
    for path, (h, w) in images.items():
        assert Image.open(out / f"{Path(path).stem}.png").size == (w, h)

    # The summary's predict command, run as printed (real images for IMAGES..., in a fresh folder).
    (line,) = [x for x in printed.splitlines() if "python -m search.predict" in x]
    argv = shlex.split(line)
    assert argv[:5] == ["python", "-m", "search.predict", "--study", "bar"], line
    assert argv[argv.index("--storage") + 1] == env.storage
    assert argv[argv.index("--tracking-uri") + 1] == env.tracking_uri
    assert argv[-2:] == ["--out", "predictions/"] and argv.count("IMAGES...") == 1, line
    at = argv.index("IMAGES...")
    argv[at:at + 1] = list(images)
    cwd = tmp_path / "as-printed"
    cwd.mkdir()
    done = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=cli_env(tmp_path / "cache"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"trial {best.number}" in done.stdout
    for path, (h, w) in images.items():
        assert Image.open(cwd / "predictions" / f"{Path(path).stem}.png").size == (w, h)

    # The summary's evaluate command parses as printed, with the test folder as its one placeholder.
    (line,) = [x for x in printed.splitlines() if "python -m search.evaluate" in x]
    argv = shlex.split(line)
    assert argv[:5] == ["python", "-m", "search.evaluate", "--study", "bar"], line
    args = evaluate_parse_args(argv[3:])
    assert (args.storage, args.tracking_uri, str(args.data)) == (env.storage, env.tracking_uri, "TEST_FOLDER"), line

    # search.report --study bar --out FILE
    report = tmp_path / "report" / "bar.html"
    assert report_main(env.read_args("--out", str(report), name="bar")) == 0, capsys.readouterr().err
    assert report.is_file() and "Study report: bar" in report.read_text()

    # search.registry --study bar: the model "bar", alias champion on the best trial's run
    assert registry_main(env.read_args(name="bar")) == 0, capsys.readouterr().err
    registry = MlflowClient(env.tracking_uri, registry_uri=env.tracking_uri)
    assert registry.get_model_version_by_alias("bar", CHAMPION).run_id == best_run

    # search.ui --study bar: its links lead to study bar's pages; SIGTERM stops it with exit code 0
    gen = started_ui(env, name="bar")
    ui = next(gen)
    try:
        dash_base, study_id = re.match(r"(http://[^/]+)/dashboard/studies/(\d+)$",
                                       ui.link("optuna-dashboard study")).groups()
        names = {s["study_id"]: s["study_name"] for s in http_json(f"{dash_base}/api/studies")["study_summaries"]}
        assert names[int(study_id)] == "bar"
        assert ui.link("MLflow experiment").endswith(f"/#/experiments/{env.experiment_id('bar')}?{TRAINING_VIEW}")
        assert ui.link("MLflow best trial run").endswith(f"/runs/{best_run}?{TRAINING_VIEW}")
        assert ui.link("registered model").endswith("/#/models/bar")
        assert ui.stop(signal.SIGTERM) == 0, ui.output
    finally:
        gen.close()
