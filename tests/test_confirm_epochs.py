"""`search.confirm --epochs N`: the best configuration retrained for longer than its trial, on a real tiny
study, checked through Optuna's and MLflow's own clients.

A 1-epoch study of one trial is confirmed with one seed for 3 epochs: the retrain's run trains 3 epochs
(its `train.epochs` param and its val mIoU curve say so), the record and the report say 3, and the
champion is that retrain. The same command again retrains nothing; with another length (2 epochs) the 3-epoch retrain
is not reused, and a fresh one trains 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Run

from search.confirm import main as confirm_main
from search.confirm import parse_args
from search.report.confirm_section import confirm_section
from tests.studykit import StudyEnv

SPACE = {"model.depth": 2, "model.base_channels": 4, "model.max_channels": 8, "model.upsample": "bilinear",
         "train.optimizer": "adam", "train.lr": 0.01, "train.momentum": None, "train.batch_size": 4,
         "transforms.crop_size": 32}


def confirm_runs(env: StudyEnv) -> list[Run]:
    return sorted((r for r in env.children() if r.data.tags.get("run_kind") == "confirm"),
                  key=lambda r: r.info.start_time)


def curve_length(env: StudyEnv, run: Run) -> int:
    return len(env.client.get_metric_history(run.info.run_id, "val_miou"))


def test_epochs_retrain_longer_resume_and_refuse_mixing_lengths(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "longer", trials=1, epochs=1, space=SPACE)
    assert env.run() == 0
    (trial,) = env.study().trials
    assert trial.user_attrs["epochs_trained"] == 1

    args = env.read_args("--top", "1", "--seeds", "1", "--device", "cpu", "--epochs", "3")
    assert confirm_main(args) == 0
    (longer,) = confirm_runs(env)
    assert longer.info.status == "FINISHED" and longer.data.params["train.epochs"] == "3"
    assert curve_length(env, longer) == 3 and longer.data.tags["epochs_trained"] == "3"
    record = env.study().user_attrs["confirm"]
    assert record["epochs"] == 3 and record["complete"]
    assert record["champion"]["run_id"] == longer.info.run_id
    assert "3 epochs each" in confirm_section(env.study()).body

    assert confirm_main(args) == 0, "the same confirm again: everything is done"
    assert [r.info.run_id for r in confirm_runs(env)] == [longer.info.run_id]

    assert confirm_main([*args[:-1], "2"]) == 0
    runs = confirm_runs(env)
    assert len(runs) == 2, "a retrain of another length is a different experiment: not reused"
    shorter = runs[1]
    assert shorter.data.params["train.epochs"] == "2" and curve_length(env, shorter) == 2
    assert env.study().user_attrs["confirm"]["epochs"] == 2


@pytest.mark.parametrize("value", ["0", "-4"])
def test_epochs_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--study", "s", "--epochs", value])
    assert exit_info.value.code == 2
    assert f"--epochs {value}: expected a positive number of epochs" in capsys.readouterr().err
