"""`python -m benchmarks.search_value --tiny`: five arms on two sampler seeds at an equal epoch budget, each
champion scored by search.evaluate on a generated test split; read back through Optuna's and MLflow's clients."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import tomllib
from mlflow import MlflowClient

from benchmarks import search_value
from tests.studykit import seed_tracking_db

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("search-value")
    for seed in search_value.TINY["seeds"]:  # each arm's MLflow store, its schema made (2.5 s each otherwise)
        for arm in search_value.ARMS:
            seed_tracking_db(work / f"s{seed}" / arm / "mlruns" / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(work / "cache"))
        assert search_value.main(["--tiny", "--work", str(work)]) == 0
    return work


def _studies(work: Path, seed: str, arm: str) -> list[optuna.study.Study]:
    storage = f"sqlite:///{work / f's{seed}' / arm / 'optuna.db'}"
    return [optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)]


def test_every_arm_of_every_seed_trains_the_same_epochs_and_is_scored_on_the_test_split(tiny: Path) -> None:
    results = json.loads((tiny / "out" / "search-value.json").read_text())
    assert list(results["rows"]) == ["0", "1"]
    for seed, row in results["rows"].items():
        assert list(row) == list(search_value.ARMS)
        for arm, r in row.items():
            assert set(r["rc"]) == {0}, (seed, arm, r)
            studies = _studies(tiny, seed, arm)
            epochs = sum(t.user_attrs["epochs_trained"] for s in studies for t in s.trials)
            if arm == "final":  # the trials' epochs and the final training's share the budget
                epochs += studies[0].user_attrs["confirm"]["epochs"]
            assert epochs == r["epochs"] == results["budget_epochs"], (seed, arm)
            evaluation = json.loads((tiny / "out" / f"evaluation-s{seed}-{arm}.json").read_text())
            assert r["test_miou"] == round(evaluation["miou"], 4) and 0 <= r["test_miou"] <= 1
            assert evaluation["images"] == search_value.TINY["test_images"]
            assert evaluation["data"].startswith(str(tiny / "test-data"))
            # The champion is the arm's best trial by val (or the final training's model), and its test score
            # is logged on its own run.
            best = max((s for s in studies if any(t.value is not None for t in s.trials)),
                       key=lambda s: s.best_value)
            client = MlflowClient(f"sqlite:///{tiny / f's{seed}' / arm / 'mlruns' / 'mlflow.db'}")
            if arm == "final":
                record = best.user_attrs["confirm"]
                assert r["val_miou"] == record["configs"][0]["final_mean"]
                assert record["configs"][0]["trial"] == best.best_trial.number
                run = client.get_run(record["champion"]["run_id"])
                assert run.data.tags["run_kind"] == "confirm"
            else:
                assert r["val_miou"] == round(best.best_value, 4)
                run = client.get_run(best.best_trial.user_attrs["mlflow_run_id"])
            assert run.data.metrics["test_miou"] == pytest.approx(evaluation["miou"])


def test_the_arms_differ_only_as_the_issue_says(tiny: Path) -> None:
    study = tomllib.loads((tiny / "tiny-study.toml").read_text())
    baseline = {k: v for k, v in study["baseline"]["params"].items()}
    for seed in ("0", "1"):
        # (c) never prunes: only the epoch budget stops a trial early.
        for t in _studies(tiny, seed, "no-pruning")[0].trials:
            assert t.state != optuna.trial.TrialState.PRUNED or t.user_attrs.get("stopped_by_budget")
        # (d) is the [baseline] alone, trained on `baseline_seeds` seeds for budget // seeds epochs each.
        runs = _studies(tiny, seed, "baseline")
        assert len(runs) == search_value.TINY["baseline_seeds"]
        for s in runs:
            (t,) = s.trials
            assert t.params == pytest.approx(baseline) and t.user_attrs["baseline"]
            assert t.user_attrs["epochs_trained"] == search_value.TINY["budget_epochs"] // len(runs)
        # (a), (a+) and (b) start from the same trial 0, the [baseline]; (b) then samples at random.
        first = [_studies(tiny, seed, arm)[0].trials[0] for arm in ("search", "final", "random")]
        assert all(t.user_attrs["baseline"] for t in first)
        # (a+) keeps a third of the budget for its final training: 4 epochs, 3 for the trials, 1 retrain.
        (final,) = _studies(tiny, seed, "final")
        assert final.user_attrs["confirm"]["epochs"] == round(search_value.TINY["budget_epochs"] / 3) == 1
        assert len(final.user_attrs["confirm"]["configs"]) == 1


def test_the_report_names_medians_and_goals(tiny: Path) -> None:
    md = (tiny / "out" / "search-value.md").read_text()
    results = json.loads((tiny / "out" / "search-value.json").read_text())
    assert "python -m benchmarks.search_value --tiny" in md
    for arm in search_value.ARMS:
        assert f"| {arm} |" in md
    assert set(results["summary"]["goals"]) == {
        "search beats random on >= 4 of 5 seeds, median >= +0.02", "search >= no-pruning (median test mIoU)",
        "search >= baseline (median test mIoU)", "search with its final training >= baseline (median test mIoU)"}
    assert results["summary"]["search_vs"]["random"]["seeds"] == 2
    assert results["summary"]["final_vs"]["baseline"]["seeds"] == 2 and "| final vs baseline | 2 |" in md


def test_resume_keeps_what_was_measured_and_refuses_other_settings(tiny: Path) -> None:
    out = tiny / "out"
    before = json.loads((out / "search-value.json").read_text())
    dbs = {p: p.stat().st_mtime_ns for p in tiny.glob("s*/*/optuna.db")}
    # Every seed and arm is there already: nothing runs, and the table is the same.
    assert search_value.main(["--tiny", "--work", str(tiny), "--resume"]) == 0
    after = json.loads((out / "search-value.json").read_text())
    assert after["rows"] == before["rows"] and after["summary"] == before["summary"]
    assert after["earlier_runs"][0]["command"] == before["command"]
    assert {p: p.stat().st_mtime_ns for p in tiny.glob("s*/*/optuna.db")} == dbs
    assert "Resumed from `python -m benchmarks.search_value --tiny" in (out / "search-value.md").read_text()
    with pytest.raises(SystemExit, match=r"budget_epochs 4 there, 6 now"):
        search_value.main(["--tiny", "--work", str(tiny), "--resume", "--budget-epochs", "6"])
    with pytest.raises(SystemExit, match="does not exist"):
        search_value.main(["--tiny", "--work", str(tiny), "--resume", "--out", str(tiny / "elsewhere")])


def test_search_over_random_is_not_judged_on_fewer_than_five_seeds() -> None:
    def row(search: float, random: float) -> dict:
        return {"search": {"test_miou": search}, "random": {"test_miou": random}}

    three = {str(s): row(0.80, 0.75) for s in range(3)}
    assert search_value.summary(three)["goals"]["search beats random on >= 4 of 5 seeds, median >= +0.02"] is None
    five = {**three, "3": row(0.80, 0.75), "4": row(0.70, 0.75)}
    assert search_value.summary(five)["goals"]["search beats random on >= 4 of 5 seeds, median >= +0.02"] is True
    five["3"] = row(0.70, 0.75)  # 3 of 5 wins
    assert search_value.summary(five)["goals"]["search beats random on >= 4 of 5 seeds, median >= +0.02"] is False
