"""`python -m benchmarks.replay`: recorded no-pruning curves through the real Optuna pruners."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.replay import early_ranks, main, replay

# Three trials of 3 epochs: the first sets the bar, the second is clearly worse from epoch 1,
# the third starts slowly and ends best (the crossing curve that aggressive pruning loses).
CURVES = [[0.30, 0.40, 0.45], [0.10, 0.12, 0.13], [0.05, 0.42, 0.60]]


def test_no_pruner_keeps_every_epoch_and_the_best():
    assert replay(CURVES, {"name": "none"}, 3) == {"epochs_trained": 9, "best_val_miou": 0.60}


def test_successive_halving_prunes_curves_below_the_best_so_far_at_the_first_rung():
    got = replay(CURVES, {"name": "sha", "min_resource": 1, "reduction_factor": 3}, 3)
    # The first trial is promoted at every rung; trials 2 and 3 are worse at epoch 1 and stop there.
    assert got == {"epochs_trained": 5, "best_val_miou": 0.45}


def test_a_later_first_rung_keeps_the_crossing_curve():
    got = replay(CURVES, {"name": "sha", "min_resource": 2, "reduction_factor": 3}, 3)
    assert got["best_val_miou"] == 0.60 and got["epochs_trained"] < 9


def test_early_ranks_show_the_crossing_curve_behind_at_epoch_1_and_ahead_from_epoch_2():
    rows = early_ranks(CURVES)
    assert [r["rank correlation with the final value"] for r in rows] == ["-0.50", "1.00", "1.00"]
    # The top tenth is one trial (the third); at epoch 1 it stands below the median (0.05 < 0.10).
    assert [r["final top tenth below the median here"] for r in rows] == ["1 of 1", "0 of 1", "0 of 1"]


def test_early_ranks_skip_short_curves_and_say_when_no_correlation_exists():
    rows = early_ranks([[0.1, 0.1], [0.1, 0.2], [0.3]])  # the 1-epoch curve is a pruned trial: left out
    assert rows[0]["rank correlation with the final value"] == "—"  # both 0.1 at epoch 1: no ranking
    assert rows[1]["rank correlation with the final value"] == "1.00"


def _results(tmp_path: Path, with_curves: bool, seeds: tuple[int, ...] = (0, 1), study: str = "default",
             name: str = "bench.json", max_epochs: int = 3) -> Path:
    curves = [{"number": i, "state": "COMPLETE", "values": v} for i, v in enumerate(CURVES)]
    runs = [{"seed": seed, "pruner": "none", "epochs_trained": 9} | ({"curves": curves} if with_curves else {})
            for seed in seeds]
    path = tmp_path / name
    path.write_text(json.dumps({"sections": {"pruning": {"study": study, "max_epochs": max_epochs, "runs": runs}}}))
    return path


def test_cli_prints_one_row_per_setting(tmp_path, capsys):
    assert main([str(_results(tmp_path, True)), "--pruner", "none", "--pruner", "sha:min_resource=2"]) == 0
    out = capsys.readouterr().out
    assert "replayed on seeds [0, 1]: 3 trials of at most 3 epochs" in out
    assert "how early the value predicts the end, over the 6 full-length curves of seeds [0, 1]" in out
    assert "| 1 | -0.50 | 1 of 1 |" in out and "| 2 | 1.00 | 0 of 1 |" in out  # both seeds' copies pooled
    assert "sha:min_resource=2" in out
    assert "| none | 1.00 1.00 | 1.00 | 0.0000 0.0000 | 0.0000 | 0.0000 |" in out  # none: ratio 1 on both seeds


def test_cli_refuses_results_without_curves_naming_the_file(tmp_path, capsys):
    path = _results(tmp_path, False)
    assert main([str(path)]) == 2
    assert f"{path}: no 'none' run with recorded curves" in capsys.readouterr().err


def test_cli_names_a_bad_setting(tmp_path, capsys):
    assert main([str(_results(tmp_path, True)), "--pruner", "sha:oops"]) == 2
    assert "'oops' in 'sha:oops': expected key=value" in capsys.readouterr().err


def test_hyperband_replays_the_same_brackets_for_the_same_benchmark_name():
    # Hyperband's bracket comes from a hash of study name and trial number: the replay uses the
    # benchmark's own study name, so a replay is repeatable and matches the measured run.
    curves = CURVES * 4  # 12 trials, so several brackets are in use
    settings = {"name": "hyperband", "min_resource": 1, "reduction_factor": 3}
    first = replay(curves, settings, 3, "default-hyperband-s0")
    assert all(replay(curves, settings, 3, "default-hyperband-s0") == first for _ in range(3))


def test_cli_refuses_a_seed_given_twice_naming_both_files(tmp_path, capsys):
    first = _results(tmp_path, True, seeds=(0, 1), name="a.json")
    second = _results(tmp_path, True, seeds=(1,), name="b.json")
    assert main([str(first), str(second), "--pruner", "none"]) == 2
    assert f"{second}: seed 1 is also in {first}" in capsys.readouterr().err


def test_cli_refuses_curves_of_another_study(tmp_path, capsys):
    first = _results(tmp_path, True, seeds=(0,), name="a.json")
    other = _results(tmp_path, True, seeds=(1,), study="studies/other.toml", name="b.json")
    assert main([str(first), str(other), "--pruner", "none"]) == 2
    assert f"{other}: study 'other', but earlier files are 'default'" in capsys.readouterr().err
    assert main([str(first), str(_results(tmp_path, True, seeds=(1,), name="c.json")), "--pruner", "none"]) == 0


def test_cli_refuses_curves_of_another_length_naming_both_files(tmp_path, capsys):
    short = _results(tmp_path, True, seeds=(0,), name="a.json")
    longer = _results(tmp_path, True, seeds=(1,), name="b.json", max_epochs=16)
    assert main([str(short), str(longer), "--pruner", "none"]) == 2
    assert f"{longer}: max_epochs=16, but {short} has 3" in capsys.readouterr().err


def test_equal_budget_rows_count_first_epoch_cuts_and_mark_a_lower_bound():
    from benchmarks.replay import budget_rows

    rows = budget_rows({0: CURVES}, ["none", "sha:min_resource=1,reduction_factor=3"], 3, (3, 6, 9))
    assert rows[0]["cut after epoch 1, per seed"] == "0" and rows[0]["mean area"] == "+0.0000"
    # SHA keeps trial 0 (3 epochs) and cuts the others after epoch 1: 5 epochs in all, so at 6 and 9 its
    # answer is its best over every recorded trial (0.45, a lower bound) against the unpruned 0.45 and 0.60.
    assert rows[1] == {"pruner": "sha:min_resource=1,reduction_factor=3", "cut after epoch 1, per seed": "2",
                       "Δ@9 per seed": "-0.150", "mean Δ@9": "≥ -0.1500", "area per seed": "-0.050",
                       "mean area": "≥ -0.0500"}


def _no_pruning_study(storage: str, name: str, curves: list[list[float]]) -> None:
    """A study as `search.run --pruner none` leaves it: every trial reports each epoch, then completes."""
    import optuna

    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for values in curves:
        trial = study.ask()
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        study.tell(trial, max(values))
    failed = study.ask()  # a failed trial has no full curve: left out
    failed.report(0.9, 1)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)


def test_cli_replays_the_curves_of_studies_as_seeds(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _no_pruning_study(storage, "a", CURVES)
    _no_pruning_study(storage, "b", CURVES[:2])
    args = ["--from-study", storage, "a", "--from-study", storage, "b", "--pruner", "none", "--pruner",
            "sha:min_resource=1,reduction_factor=3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "replayed on seeds [0, 1]: 2/3 trials of at most 3 epochs" in out
    # Study a is seed 0: SHA keeps 5 of its 9 epochs and loses 0.60 -> 0.45; study b (6 epochs) keeps 4.
    assert "| sha:min_resource=1,reduction_factor=3 | 1.80 1.50 | 1.65 | 0.1500 0.0000 |" in out


def test_cli_names_a_missing_study_or_one_without_curves(tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="empty", storage=storage)
    assert main(["--from-study", storage, "nope"]) == 2
    assert f"{storage}: no study named 'nope'" in capsys.readouterr().err
    assert main(["--from-study", storage, "empty"]) == 2
    assert f"{storage}: study 'empty' has no complete trial with reported values" in capsys.readouterr().err
