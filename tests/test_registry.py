"""The registry alias `champion` follows the study's best trial across two runs' worth of trials.

A tiny real study runs once (1 epoch per trial), then resumes with more trials of 3 epochs (so a
new best is likely but not assumed). After each run, through MlflowClient: every trial that was
the best when it finished has exactly one registered version, and `champion` points at the
version of `study.best_trial`'s run. Then the champion is loaded with `mlflow.pyfunc.load_model`
and used by `python -m search.predict --model models:/NAME@champion`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from search.predict import main as predict_main
from search.registry import CHAMPION, ChampionCallback, champion_uri
from search.registry import main as registry_main
from tests.studykit import TINY, StudyEnv

COMPLETE = optuna.trial.TrialState.COMPLETE


def record_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete trials that were the study's best when they finished, in completion order."""
    records, best = [], None
    for t in sorted(study.get_trials(states=(COMPLETE,)), key=lambda t: t.datetime_complete):
        if best is None or t.value > best:
            records.append(t)
            best = t.value
    return records


def registry(tiny: StudyEnv) -> MlflowClient:
    return MlflowClient(tiny.tracking_uri, registry_uri=tiny.tracking_uri)


def assert_champion_is_best(tiny: StudyEnv) -> str:
    """Checks the alias and the versions; returns the champion's run id."""
    client, study = registry(tiny), tiny.study()
    versions = client.search_model_versions(f"name = '{tiny.name}'")
    runs = [v.run_id for v in versions]
    assert len(runs) == len(set(runs)), f"a run was registered twice: {runs}"
    assert set(runs) == {t.user_attrs["mlflow_run_id"] for t in record_trials(study)}
    champion = client.get_model_version_by_alias(tiny.name, CHAMPION)
    best = study.best_trial
    assert champion.run_id == best.user_attrs["mlflow_run_id"]
    assert champion.tags["trial_number"] == str(best.number)
    model = client.get_logged_model(champion.tags["model_id"])  # the version is the run's LoggedModel
    assert (model.name, model.source_run_id) == ("model", champion.run_id)
    assert champion.source == model.artifact_location
    return champion.run_id


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyEnv, str, str]]:
    """(study, champion run after the first run, champion run after the resumed second run)."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(root / "cache"))
        tiny = StudyEnv(root, "tiny", trials=2, epochs=1, **TINY)
        assert tiny.run() == 0
        first = assert_champion_is_best(tiny)
        assert tiny.run("--trials", "2", "--epochs", "3") == 0  # resume: two more trials, three epochs each
        second = assert_champion_is_best(tiny)
        yield tiny, first, second


def test_alias_follows_best_trial_across_two_runs(two_runs: tuple[StudyEnv, str, str]) -> None:
    tiny, first, second = two_runs
    study = tiny.study()
    assert len(study.trials) == 4
    assert second == study.best_trial.user_attrs["mlflow_run_id"]
    first_run_trials = {t.user_attrs["mlflow_run_id"] for t in study.trials[:2]}
    assert first in first_run_trials
    if study.best_trial.number >= 2:  # the resumed run found a better trial: the alias moved to it
        assert second != first
    else:
        assert second == first


def test_callback_is_idempotent_and_ignores_non_best(two_runs: tuple[StudyEnv, str, str]) -> None:
    tiny, _, champion_run = two_runs
    study, client = tiny.study(), registry(tiny)
    before = sorted(v.version for v in client.search_model_versions(f"name = '{tiny.name}'"))
    callback = ChampionCallback(tiny.tracking_uri, tiny.name)
    for trial in study.trials:  # replaying every trial's callback (e.g. a second worker) changes nothing
        callback(study, trial)
    after = sorted(v.version for v in client.search_model_versions(f"name = '{tiny.name}'"))
    assert after == before
    assert client.get_model_version_by_alias(tiny.name, CHAMPION).run_id == champion_run


def test_champion_loads_with_pyfunc(two_runs: tuple[StudyEnv, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tiny, _, _ = two_runs
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_model prepends the model's code/ folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny.tracking_uri)  # restored after the test
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tiny.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(champion_uri(tiny.name))
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    labels = model.predict(np.zeros((1, 33, 47, 3), np.uint8))
    assert labels.shape == (1, 33, 47) and labels.dtype == np.uint8 and labels.max() < 10


def test_predict_with_champion_model_uri(two_runs: tuple[StudyEnv, str, str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    tiny, _, _ = two_runs
    image = tmp_path / "in" / "odd.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (29, 41, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    rc = predict_main(["--model", champion_uri(tiny.name), "--tracking-uri", tiny.tracking_uri, "--device", "cpu",
                       str(image), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    best = tiny.study().best_trial
    assert f"trial {best.number}" in capsys.readouterr().out
    assert Image.open(out / "odd.png").size == (41, 29)
    assert (out / "odd_overlay.png").is_file()

    # The champion's LoggedModel by its own id, models:/m-...: the same trial.
    model_id = registry(tiny).get_model_version_by_alias(tiny.name, CHAMPION).tags["model_id"]
    rc = predict_main(["--model", f"models:/{model_id}", "--tracking-uri", tiny.tracking_uri, "--device", "cpu",
                       str(image), "--out", str(tmp_path / "by-id")])
    assert rc == 0, capsys.readouterr().err
    assert f"(trial {best.number})" in capsys.readouterr().out
    assert Image.open(tmp_path / "by-id" / "odd.png").size == (41, 29)

    # A model that does not exist: a clear error naming it, nothing written.
    assert predict_main(["--model", "models:/nope@champion", "--tracking-uri", tiny.tracking_uri,
                         str(image), "--out", str(tmp_path / "none")]) == 2
    assert "models:/nope@champion" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_registry_cli_registers_best_under_another_name(two_runs: tuple[StudyEnv, str, str],
                                                        capsys: pytest.CaptureFixture) -> None:
    tiny, _, champion_run = two_runs
    args = tiny.read_args("--model-name", "tiny-copy")
    assert registry_main(args) == 0
    assert registry_main(args) == 0  # again: same version, no duplicate
    versions = registry(tiny).search_model_versions("name = 'tiny-copy'")
    assert [v.run_id for v in versions] == [champion_run]
    assert registry(tiny).get_model_version_by_alias("tiny-copy", CHAMPION).run_id == champion_run
    assert "models:/tiny-copy@champion" in capsys.readouterr().out
    assert registry_main(tiny.read_args(name="nope")) == 2
    assert "'nope'" in capsys.readouterr().err
