"""`python -m benchmarks.trial_noise`: seed noise of one configuration against the spread of configurations."""

from __future__ import annotations

import statistics

import optuna
import pytest

from benchmarks.trial_noise import main, noise_summary


def _study(storage: str, name: str, curves: list[list[float]], baseline_first: bool = False) -> None:
    """Complete trials that report each epoch and return their best value, as `search.run` leaves them."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for i, values in enumerate(curves):
        trial = study.ask()
        if baseline_first and i == 0:
            trial.set_user_attr("baseline", True)
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        study.tell(trial, max(values))


def test_reliability_is_the_share_of_the_spread_that_is_not_seed_noise():
    got = noise_summary([0.30, 0.34], [0.2, 0.3, 0.4])  # seed sd 0.0283, configurations sd 0.1
    assert got["sd_seed"] == pytest.approx(0.02828, abs=1e-4)
    assert got["reliability"] == pytest.approx(1 - 0.0008 / 0.01)
    assert got["sd_between"] == pytest.approx((0.01 - 0.0008) ** 0.5)
    # Seeds that scatter more than configurations: a lottery, not a negative reliability.
    assert noise_summary([0.1, 0.5], [0.3, 0.31])["reliability"] == 0.0
    with pytest.raises(ValueError, match="at least 2 repeats"):
        noise_summary([0.3], [0.2, 0.4])


def test_cli_counts_the_baseline_trial_as_a_repeat_and_only_full_length_trials(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _study(storage, "repeats", [[0.1, 0.30], [0.1, 0.34], [0.9]])  # the 1-epoch trial is left out
    _study(storage, "configs", [[0.0, 0.32], [0.1, 0.2], [0.2, 0.4], [0.5]], baseline_first=True)
    assert main(["--repeats", storage, "repeats", "--configs", storage, "configs"]) == 0
    out = capsys.readouterr().out
    assert "trials of 2 epochs: 3 runs of one configuration, 2 other configurations" in out
    assert "one configuration, by seed: 0.300 0.320 0.340 (mean 0.320, sd 0.020)" in out
    assert f"configurations: mean 0.300, sd {statistics.stdev([0.2, 0.4]):.3f}, range 0.200-0.400" in out
    assert "reliability 0.98" in out  # 1 - 0.02^2 / 0.1414^2 = 1 - 0.0004 / 0.02


def test_cli_names_a_missing_study(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert main(["--configs", storage, "nope"]) == 2  # no storage there: refused, not created empty
    assert "no storage at" in capsys.readouterr().err and not (tmp_path / "optuna.db").exists()
    optuna.create_study(study_name="other", storage=storage)
    assert main(["--configs", storage, "nope"]) == 2
    assert f"{storage}: no study named 'nope'" in capsys.readouterr().err
