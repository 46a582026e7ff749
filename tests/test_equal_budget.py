"""`python -m benchmarks.equal_budget`: pruned against unpruned at equal epoch budgets, on tiny recorded runs
whose answers are worked out by hand, and the `--tiny` path end to end (a real measurement, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.equal_budget import across_seeds, best_at, bootstrap_ci, compare, goal_met, main, seed_deltas


def curve(number: int, state: str, values: list[float]) -> dict:
    return {"number": number, "state": state, "values": values}


# Unpruned: three full trials of 4 epochs (cumulative 4, 8, 12 epochs).
NONE = [curve(0, "COMPLETE", [0.1, 0.2, 0.3, 0.4]), curve(1, "COMPLETE", [0.2, 0.5, 0.6, 0.7]),
        curve(2, "COMPLETE", [0.1, 0.1, 0.1, 0.2])]
# Pruned: trial 1 cut after 1 epoch (5), trial 2 complete (9), trial 3 stopped by the budget at 12 (PRUNED).
PRUNED = [curve(0, "COMPLETE", [0.1, 0.2, 0.3, 0.4]), curve(1, "PRUNED", [0.05]),
          curve(2, "COMPLETE", [0.3, 0.6, 0.8, 0.9]), curve(3, "PRUNED", [0.2, 0.3, 0.1])]


def test_the_answer_at_a_budget_is_the_best_complete_trial_finished_within_it() -> None:
    assert best_at(NONE, 4) == 0.4 and best_at(NONE, 7) == 0.4 and best_at(NONE, 8) == 0.7
    assert best_at(PRUNED, 8) == 0.4, "trial 2 ends at epoch 9: not yet an answer at 8"
    assert best_at(PRUNED, 12) == 0.9, "the budget-stopped trial is no answer"
    assert best_at(NONE, 13) is None, "the run stopped at 12 epochs: no answer at 13"


def test_deltas_area_and_the_last_budget_of_one_seed() -> None:
    got = seed_deltas(PRUNED, NONE, (4, 8, 12))
    assert got["deltas"] == {4: 0.0, 8: -0.3, 12: 0.2}
    assert got["area"] == pytest.approx(-0.0333, abs=1e-4) and got["final"] == 0.2
    assert (got["pruned_best"], got["unpruned_best"]) == (0.9, 0.7), "each arm's own answer at the last budget"
    assert got["epoch1_cuts"] == 1, "trial 1 was cut on its first epoch; trial 3 (3 epochs) was not"
    assert seed_deltas(PRUNED, NONE, (4, 8, 16))["area"] is None, "a budget without an answer: no area"


def test_across_seeds_and_the_goal() -> None:
    stats = across_seeds([0.05, -0.01, 0.002, 0.04])
    assert stats["w/t/l"] == "2/1/1" and stats["median"] == pytest.approx(0.021) and stats["min"] == -0.01
    low, high = bootstrap_ci([0.05, -0.01, 0.002, 0.04])
    assert -0.01 <= low < stats["mean"] < high <= 0.05
    assert bootstrap_ci([0.05, -0.01, 0.002, 0.04]) == (low, high), "a fixed resampling seed"
    assert goal_met([0.04, 0.05, 0.03, 0.06, -0.01], [0.0, 0.01, -0.02, 0.02, 0.0])
    assert not goal_met([0.04, 0.05, 0.03, -0.06, -0.01], [0.0] * 5), "area > 0 on only 3 of 5 seeds"
    assert not goal_met([0.04] * 5, [0.01, 0.01, 0.01, 0.01, -0.03]), "a seed below -0.02 at the last budget"


def _file(tmp_path: Path, name: str, runs: list[dict]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"sections": {"pruning": {"study": "default", "runs": runs}}}))
    return path


def test_cli_pairs_each_pruned_run_with_its_seeds_unpruned_run(tmp_path: Path, capsys) -> None:
    none = _file(tmp_path, "none.json", [{"seed": s, "pruner": "none", "curves": NONE} for s in (0, 1)])
    pruned = _file(tmp_path, "pruned.json", [{"seed": 0, "pruner": "median", "curves": PRUNED},
                                             {"seed": 1, "pruner": "median", "curves": NONE}])
    out = tmp_path / "eq.json"
    assert main([str(none), str(pruned), "--budgets", "4:12:4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| median | 0 | -0.0333 | 0.2 | +0.000 -0.300 +0.200 | 0.9 | 0.7 | 1 |" in printed
    assert "| median | 1 | 0 | 0 | +0.000 +0.000 +0.000 | 0.7 | 0.7 | 0 |" in printed
    result = json.loads(out.read_text())
    assert result["pruners"]["median"]["area"]["w/t/l"] == "0/1/1" and result["pruners"]["median"]["goal_met"] is False
    assert out.with_suffix(".md").read_text().startswith("equal-budget comparison at 4..12 epochs")
    assert compare([{"seed": 0, "pruner": "none", "curves": NONE}])["pruners"] == {}


def test_cli_refuses_runs_it_cannot_pair_naming_the_file(tmp_path: Path, capsys) -> None:
    lonely = _file(tmp_path, "lonely.json", [{"seed": 3, "pruner": "median", "curves": PRUNED}])
    assert main([str(lonely)]) == 2
    assert "seed 3" in (err := capsys.readouterr().err) and str(lonely) in err and "no unpruned" in err
    bare = _file(tmp_path, "bare.json", [{"seed": 0, "pruner": "none", "epochs_trained": 12}])
    assert main([str(bare)]) == 2
    assert f"{bare}: seed 0 pruner 'none' has no recorded curves" in capsys.readouterr().err


def test_tiny_measures_both_arms_at_an_epoch_budget_and_analyses_them(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--tiny", "--json", str(tmp_path / "tiny.json")]) == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["budgets"] == [2, 4] and list(result["pruners"]) == ["median:n_startup_trials=1"]
    assert result["pruners"]["median:n_startup_trials=1"]["seeds"]["0"]["area"] is not None
