"""The final training a budget keeps: `[confirm] share` of `--timeout` trains the search's best
configuration once more, for as many epochs as fit (`search.confirm --seconds`); of `--total-epochs B`,
for share x B epochs, the search's trials training the rest.

Checked on the rules (the planner's budget, the study file, the search's deadline) and on real tiny
studies through Optuna's and MLflow's own clients: `--seconds` turns the trial's own wall time per
epoch into the retrain's length, never shorter than the trial; `search.run --timeout` with a share
runs the retrain by itself after the search and crowns it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from pathlib import Path

import optuna
import pytest
import tomllib

from search.budget_split import confirm_seconds, final_epochs, run_budget, run_timeout
from search.confirm import main as confirm_main
from search.confirm_retrains import epochs_that_fit
from search.plan.budget import (
    FINAL_SHARE,
    LONG_EPOCHS,
    SHORT_EPOCHS,
    SHORT_FINAL_SHARE,
    expected_epochs,
    final_share,
    plan_budget,
)
from search.plan.decisions import Plan
from search.plan.plan_toml import render_toml
from search.predict import checkpoint_from_study
from search.settings import RunSettings
from search.study.definition import load_study, parse_study
from tests.studykit import TINY, StudyEnv

CONFIRM = "\n[confirm]\ntop = 1\nseeds = 1\nshare = {share}\n"


def _values(budget) -> dict:
    return {(d.table, d.key): d.value for d in budget.decisions}


@pytest.mark.parametrize("hours, epoch_s, share", [(0.25, 5.0, SHORT_FINAL_SHARE), (3.0, 20.0, 0.56),
                                                   (8.0, 10.0, FINAL_SHARE)])
def test_a_time_budget_keeps_its_share_for_the_final_training(hours: float, epoch_s: float, share: float) -> None:
    budget = plan_budget(epoch_s, "test", seconds=hours * 3600)
    values = _values(budget)
    # The trials fit the search's part; the file's timeout is the whole budget.
    assert budget.trials * expected_epochs(budget.max_epochs) * epoch_s <= hours * 3600 * (1 - share)
    assert values[("budget", "timeout_s")] == round(hours * 3600)
    assert (values[("confirm", "top")], values[("confirm", "seeds")], values[("confirm", "share")]) == (1, 1, share)
    sdef = parse_study(tomllib.loads(render_toml(Plan(list(budget.decisions), {}))), Path("planned.toml"))
    assert (sdef.confirm_top, sdef.confirm_seeds, sdef.confirm_share) == (1, 1, share)
    why = next(d.why for d in budget.decisions if (d.table, d.key) == ("confirm", "share"))
    assert f"about {hours * 3600 / epoch_s:.0f} epochs" in why


def test_a_short_budget_keeps_more_for_the_final_training_and_a_long_one_half() -> None:
    """By the epochs the whole budget trains: SHORT_FINAL_SHARE up to SHORT_EPOCHS, half from LONG_EPOCHS,
    never less on a shorter budget; the search's trials get the rest of the same budget."""
    epochs = [50, SHORT_EPOCHS, 375, 450, 525, LONG_EPOCHS, 5000]
    shares = [final_share(e) for e in epochs]
    assert shares[0] == shares[1] == SHORT_FINAL_SHARE and shares[-2] == shares[-1] == FINAL_SHARE
    assert shares == sorted(shares, reverse=True) and len(set(shares)) == 5
    short, long = plan_budget(20.0, "test", seconds=3600), plan_budget(1.0, "test", seconds=3600)
    assert _values(short)[("confirm", "share")] == SHORT_FINAL_SHARE and _values(long)[("confirm", "share")] == 0.5
    assert short.trials * expected_epochs(short.max_epochs) * 20.0 <= 3600 * (1 - SHORT_FINAL_SHARE)


def test_an_epoch_budget_keeps_no_share() -> None:
    assert not [d for d in plan_budget(10.0, "test", total_epochs=400).decisions if d.table == "confirm"]


@pytest.mark.parametrize("share", ["1.0", "-0.1", '"half"', "true"])
def test_a_share_outside_0_to_1_is_refused(tmp_path: Path, share: str) -> None:
    env = StudyEnv(tmp_path, "bad", **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=share))
    with pytest.raises(ValueError, match=r"\[confirm\] share must be a fraction of the budget"):
        load_study(env.file)


def test_the_search_stops_at_its_share_and_the_retrains_get_the_rest(tmp_path: Path) -> None:
    env = StudyEnv(tmp_path, "shared", **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=0.25))
    sdef = load_study(env.file)
    ten_s_ago = time.monotonic() - 10
    settings = RunSettings(timeout=100, started=ten_s_ago)
    assert 64 < run_timeout(settings, sdef) <= 65  # 75 s of search, 10 spent
    assert 89 < confirm_seconds(settings, sdef) <= 90  # the retrains: what is left of the 100
    no_confirm = RunSettings(timeout=100, started=ten_s_ago, confirm=0)
    assert 89 < run_timeout(no_confirm, sdef) <= 90 and confirm_seconds(no_confirm, sdef) is None
    worker = RunSettings(timeout=40, started=ten_s_ago, worker_index=0)  # its parent already took the share
    assert 29 < run_timeout(worker, sdef) <= 30 and confirm_seconds(worker, sdef) is None
    assert run_timeout(RunSettings(), sdef) is None and confirm_seconds(RunSettings(), sdef) is None
    # The file's own clock keeps the share, unless a budget on the command line replaces the file's.
    clocked = dataclasses.replace(sdef, timeout_s=100.0)
    assert 64 < run_timeout(RunSettings(started=ten_s_ago), clocked) <= 65
    trials_only = RunSettings(trials=1, started=ten_s_ago)
    assert 89 < run_timeout(trials_only, clocked) <= 90 and confirm_seconds(trials_only, clocked) is None


def test_confirm_share_on_the_command_line_replaces_the_study_s(tmp_path: Path) -> None:
    env = StudyEnv(tmp_path, "override", **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=0.8))
    sdef = load_study(env.file)
    ten_s_ago = time.monotonic() - 10
    assert 9 < run_timeout(RunSettings(timeout=100, started=ten_s_ago), sdef) <= 10  # the file's: 20 s of search
    half = RunSettings(timeout=100, started=ten_s_ago, confirm_share=0.5)
    assert 39 < run_timeout(half, sdef) <= 40 and 89 < confirm_seconds(half, sdef) <= 90
    none = RunSettings(timeout=100, started=ten_s_ago, confirm_share=0.0)
    assert 89 < run_timeout(none, sdef) <= 90 and confirm_seconds(none, sdef) is None
    assert final_epochs(RunSettings(total_epochs=100, confirm_share=0.5), sdef) == 50
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=f"--confirm-share {bad}: expected a fraction of the budget"):
            RunSettings(confirm_share=bad)


def test_an_epoch_budget_keeps_its_share_and_the_clock_none(tmp_path: Path) -> None:
    env = StudyEnv(tmp_path, "epochs", **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=0.25))
    sdef, study = load_study(env.file), optuna.create_study()
    ten_s_ago = time.monotonic() - 10
    settings = RunSettings(total_epochs=100, timeout=100, started=ten_s_ago)
    assert final_epochs(settings, sdef) == 25 and run_budget(study, settings, sdef).epochs == 75
    # The epochs decide the retrain's length, so the clock is the search's whole.
    assert 89 < run_timeout(settings, sdef) <= 90 and confirm_seconds(settings, sdef) is None
    two = RunSettings(total_epochs=100, confirm=2, confirm_seeds=2)  # 4 retrains share the 25 epochs
    assert final_epochs(two, sdef) == 6 and run_budget(study, two, sdef).epochs == 76
    for none in (RunSettings(total_epochs=100, confirm=0), RunSettings(total_epochs=75, worker_index=0),
                 RunSettings(trials=3)):
        assert final_epochs(none, sdef) is None
    assert run_budget(study, RunSettings(total_epochs=75, worker_index=0), sdef).epochs == 75  # the parent's share
    filed = dataclasses.replace(sdef, total_epochs=40)  # the study file's epoch budget keeps it too
    assert final_epochs(RunSettings(), filed) == 10 and run_budget(study, RunSettings(), filed).epochs == 30


def _frozen(epochs: int, wall_s: float) -> optuna.trial.FrozenTrial:
    start = dt.datetime(2026, 12, 4, 12, 0, 0)
    return optuna.trial.FrozenTrial(
        number=0, state=optuna.trial.TrialState.COMPLETE, value=0.5, values=None, datetime_start=start,
        datetime_complete=start + dt.timedelta(seconds=wall_s), params={}, distributions={},
        user_attrs={"epochs_trained": epochs}, system_attrs={}, intermediate_values={}, trial_id=0)


@pytest.mark.parametrize("seconds, expected", [(0.0, 4), (39.0, 4), (100.0, 10), (1000.0, 100)])
def test_epochs_that_fit_use_the_trials_wall_seconds_per_epoch(seconds: float, expected: int) -> None:
    assert epochs_that_fit(_frozen(4, 40.0), 4, seconds) == expected  # 10 s an epoch, never below its 4


def test_confirm_seconds_sizes_the_retrain_from_the_stored_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "sized", trials=1, epochs=1, **TINY)
    assert env.run() == 0
    (trial,) = env.study().trials
    per_epoch = (trial.datetime_complete - trial.datetime_start).total_seconds()
    seconds = 3.5 * per_epoch
    assert confirm_main(env.read_args("--top", "1", "--seeds", "1", "--device", "cpu",
                                      "--seconds", f"{seconds!r}")) == 0
    assert f"as many epochs as fit in {seconds:.0f} s" in " ".join(capsys.readouterr().out.split())
    record = env.study().user_attrs["confirm"]
    assert record["epochs"] == math.floor(seconds / per_epoch) == 3
    (retrain,) = [r for r in env.children() if r.data.tags.get("run_kind") == "confirm"]
    assert retrain.data.params["train.epochs"] == "3" and record["champion"]["run_id"] == retrain.info.run_id
    with pytest.raises(SystemExit):
        confirm_main(env.read_args("--epochs", "2", "--seconds", "9"))
    assert "give one of them" in capsys.readouterr().err


def test_search_run_with_a_share_trains_its_best_configuration_after_the_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "final", trials=2, epochs=1, **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=0.5))
    assert env.run("--timeout", "40") == 0  # the 2 trials end the search well before its 20 s
    study = env.study()
    record = study.user_attrs["confirm"]
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    assert record["top"] == 1 and len(record["seeds"]) == 1 and record["configs"][0]["trial"] == best.number
    # More than half of the 40 s were left, so the retrain trains more epochs than its 1-epoch trial.
    assert record["epochs"] > 1
    (retrain,) = [r for r in env.children() if r.data.tags.get("run_kind") == "confirm"]
    assert retrain.info.status == "FINISHED" and retrain.data.params["train.epochs"] == str(record["epochs"])
    assert record["champion"]["run_id"] == retrain.info.run_id


def test_a_search_with_no_complete_trial_skips_the_final_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "empty", trials=2, epochs=1, **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=0.5))
    assert env.run("--timeout", "0") == 0  # the set-up spends the budget: no trial, and no error either
    assert env.study().trials == [] and "confirm" not in env.study().user_attrs
    said = " ".join(capsys.readouterr().out.split())
    assert "no complete trial: nothing to confirm" in said
    assert "of --timeout 0 s (the last 50% of it is kept for the final training)" in said


def test_search_run_with_an_epoch_budget_retrains_its_best_for_the_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "epoch-final", trials=50, epochs=2, **TINY)
    env.file.write_text(env.file.read_text() + CONFIRM.format(share=0.5))
    assert env.run("--total-epochs", "8") == 0
    study = env.study()
    trained = sum(t.user_attrs["epochs_trained"] for t in study.trials)
    assert trained == 4, "the trials train (1 - share) x 8 epochs in all"
    record = study.user_attrs["confirm"]
    assert record["epochs"] == 4 and record["configs"][0]["trial"] == study.best_trial.number
    (retrain,) = [r for r in env.children() if r.data.tags.get("run_kind") == "confirm"]
    assert retrain.info.status == "FINISHED" and retrain.data.params["train.epochs"] == "4"
    assert record["champion"]["run_id"] == retrain.info.run_id
    # Reading the study by its best trial says which model the study crowned instead.
    checkpoint_from_study(env.name, None, env.storage, env.tracking_uri, tmp_path / "ckpt")
    note = capsys.readouterr().err
    assert f"--model models:/{env.name}@champion uses the crowned model" in note
    assert f"retrain of trial {record['configs'][0]['trial']}" in note
    checkpoint_from_study(env.name, 0, env.storage, env.tracking_uri, tmp_path / "ckpt0")
    assert "crowned" not in capsys.readouterr().err, "a chosen trial is what the user asked for"
