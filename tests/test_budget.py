"""Epoch budgets: `--total-epochs N` stops the study once its trials trained N epochs in all, pruned ones
included, exactly on one machine; the count survives a resume and is shared by `--workers`.

Checked through Optuna's own API: each finished trial's `epochs_trained` user attr, its reported
(intermediate) values, and its state.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.budget_split import run_budget
from search.run import parse_args
from search.study.definition import load_study
from search.study.quota import Budget
from tests.faultkit import assert_consistent, cli_env, start_run
from tests.studykit import TINY, StudyEnv

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def spent(study: optuna.Study) -> int:
    """Epochs trained in all, from Optuna; each trial's attr agrees with the epochs it reported."""
    trials = study.get_trials(deepcopy=False)
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state.name) for t in trials]
    for t in trials:
        assert t.user_attrs["epochs_trained"] == len(t.intermediate_values), t.number
        assert t.datetime_start is not None and t.datetime_complete is not None
    return sum(t.user_attrs["epochs_trained"] for t in trials)


def test_total_epochs_is_exact_across_resumes_and_pruned_trials_count(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "budget", trials=50, epochs=3, **TINY)
    # 5 epochs: a full trial of 3, then one allowed only 2, stopped by the budget (PRUNED, marked so).
    assert env.run("--total-epochs", "5") == 0
    trials = env.study().trials
    assert spent(env.study()) == 5 and [t.state for t in trials] == [COMPLETE, PRUNED]
    assert [t.user_attrs["epoch_allowance"] for t in trials] == [3, 2]
    assert trials[1].user_attrs["stopped_by_budget"] is True and "stopped_by_budget" not in trials[0].user_attrs
    assert env.trial_run(trials[1]).data.tags["stopped_by"] == "budget"
    # Resume to 8 with a pruner that cuts every trial after its first epoch: pruned epochs count too.
    assert env.run("--total-epochs", "8", "--pruner", "threshold:lower=0.99") == 0
    resumed = env.study().trials[2:]
    assert spent(env.study()) == 8 and len(resumed) == 3
    assert all(t.state == PRUNED and "stopped_by_budget" not in t.user_attrs for t in resumed)
    # The budget is spent: the same command starts nothing; with --trials 1 both limits apply.
    assert env.run("--total-epochs", "8") == 0 and len(env.study().trials) == 5
    assert env.run("--trials", "1", "--total-epochs", "100") == 0
    assert len(env.study().trials) == 6 and spent(env.study()) == 11


def test_budget_flags_replace_the_study_files_budget(tmp_path: Path) -> None:
    study = optuna.create_study()
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=0.5))
    plain = load_study(StudyEnv(tmp_path, "plain", trials=7).file)
    epochs_only = tmp_path / "epochs.toml"
    epochs_only.write_text(plain.path.read_text().replace("trials = 7", "total_epochs = 40"))
    by_epochs = load_study(epochs_only)
    assert by_epochs.trials is None and by_epochs.total_epochs == 40

    def budget(sdef, *flags: str) -> Budget:
        return run_budget(study, parse_args(["--study", str(sdef.path), *flags]), sdef)

    assert budget(plain) == Budget(2 + 7, None)  # --trials counts from the trials the study holds
    assert budget(by_epochs) == Budget(None, 40)
    assert budget(by_epochs, "--trials", "3") == Budget(5, None)  # flags replace the file's budget
    assert budget(plain, "--total-epochs", "30") == Budget(None, 30)
    assert budget(plain, "--total-trials", "4", "--total-epochs", "30") == Budget(4, 30)
    assert budget(plain, "--worker-index", "1", "--target-total", "9", "--total-epochs", "12") == Budget(9, 12)


@pytest.mark.parametrize(("text", "error"), [
    ("total_epochs = 0", "[budget] total_epochs = 0; expected an integer >= 1"),
    ("total_epochs = 2.5", "[budget] total_epochs = 2.5; expected an integer >= 1"),
])
def test_a_bad_epoch_budget_names_the_file_and_key(tmp_path: Path, text: str, error: str) -> None:
    path = StudyEnv(tmp_path, "bad", trials=7).file
    path.write_text(path.read_text().replace("trials = 7", text))
    with pytest.raises(ValueError) as err:
        load_study(path)
    assert str(path) in str(err.value) and error in str(err.value)


def test_total_epochs_must_be_positive_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--total-epochs", "0"])
    assert "--total-epochs 0: expected a positive number" in capsys.readouterr().err


@pytest.mark.slow
def test_two_workers_share_the_epoch_budget_exactly_and_resume(tmp_path: Path) -> None:
    env = StudyEnv(tmp_path, "budget2", storage=str(tmp_path / "optuna.journal"), trials=50, epochs=3, **TINY)
    run_env, log = cli_env(tmp_path / "cache"), tmp_path / "run.log"
    for total in (7, 11):  # 7 epochs, then the same study resumed to 11
        proc = start_run(env.run_args("--workers", "2", "--total-epochs", str(total)), run_env, log)
        assert proc.wait(timeout=480) == 0, log.read_text()[-3000:]
        study = env.study()
        assert spent(study) == total
        assert_consistent(env.storage, env.tracking_uri, env.name, expected_counted=len(study.trials))
        assert all(t.user_attrs["epochs_trained"] <= t.user_attrs["epoch_allowance"] <= 3 for t in study.trials)
    assert {t.user_attrs["worker"] for t in env.study().trials} == {0, 1}, "both workers ran trials"


def test_the_timeout_counts_from_the_command_start_planning_included(tmp_path: Path) -> None:
    import time

    from search.budget_split import run_timeout
    from search.settings import RunSettings

    sdef = load_study(StudyEnv(tmp_path, "clock", **TINY).file)
    # A command that started 50 s ago (planning a dataset, say) has 10 s of a 60 s --timeout left.
    settings = RunSettings(timeout=60, started=time.monotonic() - 50)
    assert 9 < run_timeout(settings, sdef) <= 10
    assert run_timeout(RunSettings(timeout=60, started=time.monotonic() - 90), sdef) == 0
    assert run_timeout(RunSettings(), sdef) == sdef.timeout_s  # no --timeout: the study's own (None here)
    with pytest.raises(ValueError, match="--timeout -1"):
        RunSettings(timeout=-1)


def test_a_timeout_spent_before_the_first_trial_starts_none_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "spent", trials=3, epochs=1, **TINY)
    # --timeout 0: the set-up alone (storages, the parent run) spends it, so no trial starts.
    assert env.run("--timeout", "0") == 0
    assert env.study().trials == []
    said = " ".join(capsys.readouterr().out.split())
    assert "no trial started: planning and set-up took" in said and "of --timeout 0 s. Give a longer budget" in said
    # With time left, the same command resumes the study and trains.
    assert env.run("--timeout", "600") == 0
    assert len(env.study().trials) == 3
