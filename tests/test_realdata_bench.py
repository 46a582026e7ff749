"""benchmarks.realdata: the time-model verdict and the report from plain rows, and `--tiny` end to end
(a planned search and the plan's baseline on generated data, scored on a test folder, read back through
Optuna's and MLflow's own clients)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from benchmarks.realdata import main
from benchmarks.realdata_readback import baseline_epoch_seconds, time_model
from benchmarks.realdata_report import markdown_report
from tests.studykit import seed_tracking_db


def _row(trial: int, state: str, predicted: float | None, measured: float | None, baseline: bool = False,
         wall: float | None = None) -> dict:
    ratio = round(measured / predicted, 3) if predicted and measured else None
    return {"trial": trial, "baseline": baseline, "state": state, "epochs": 2, "wall_s_per_epoch": wall,
            "best_val_miou": 0.5, "fail_reason": None, "predicted_s": predicted, "measured_s": measured,
            "first_epoch_s": measured, "ratio": ratio, "within_30pct": None if ratio is None else abs(ratio - 1) <= 0.3,
            "run_id": None}


@pytest.mark.parametrize(("measured", "meets"), [((10.0, 12.9, 7.1), True), ((10.0, 13.1, 10.0), False),
                                                 ((6.9, 10.0, 10.0), False)])
def test_time_model_judges_the_first_three_complete_trials(measured: tuple[float, ...], meets: bool) -> None:
    rows = [_row(0, "PRUNED", 10.0, 30.0)]  # a pruned trial does not count, however far off
    rows += [_row(i + 1, "COMPLETE", 10.0, m) for i, m in enumerate(measured)]
    rows.append(_row(9, "COMPLETE", 10.0, 99.0))  # the fourth complete trial is not among the first three
    tm = time_model(rows)
    assert tm["first_complete_trials"] == [1, 2, 3]
    assert tm["meets_goal"] is meets
    assert tm["within_30pct_all"] == f"{sum(abs(m / 10 - 1) <= 0.3 for m in measured)}/5"


def test_time_model_without_predictions_is_not_judged() -> None:
    tm = time_model([_row(0, "COMPLETE", None, 5.0)])
    assert tm["meets_goal"] is None and tm["trials_without_prediction"] == 1


def test_baseline_epochs_come_from_the_searchs_baseline_trial() -> None:
    search = {"trials": [_row(0, "COMPLETE", 4.0, 5.0, baseline=True, wall=6.0), _row(1, "COMPLETE", 1.0, 1.0)]}
    assert baseline_epoch_seconds(search)[0] == 6.0
    search["trials"][0]["wall_s_per_epoch"] = None
    assert baseline_epoch_seconds(search)[0] == 5.0


def test_report_names_what_was_not_measured() -> None:
    results = {"dataset": "x", "minutes": 1, "command": "c", "data": "d", "test": "t", "work": "w", "started": "s",
               "machine": {"cpu": "cpu", "cpu_cores": 2, "torch_threads": 2, "gpu": None, "torch": "2",
                           "optuna": "4", "mlflow": "3"},
               "arms": {"search": {"command": "python -m search.run", "rc": 1, "log": "search.log"},
                        "baseline": {"skipped": True, "reason": "the plan has no [baseline]"}}}
    md = markdown_report(results)
    assert "exited 1" in md and "not run: the plan has no [baseline]" in md
    assert "Search vs baseline on test: not measured" in md


@pytest.mark.parametrize(("crowned", "named", "kept"), [(0, True, None), (1, False, None),
                                                       (0, True, {"margin": 0.05, "trial": 1, "lead": 0.031})])
def test_report_says_when_the_search_crowned_the_baseline_configuration(crowned: int, named: bool,
                                                                       kept: dict | None) -> None:
    trials = [_row(0, "COMPLETE", 4.0, 4.0, baseline=True), _row(1, "COMPLETE", 4.0, 4.0)]
    results = {"dataset": "x", "minutes": 30, "command": "c", "data": "d", "test": "t", "work": "w", "started": "s",
               "machine": {"cpu": "cpu", "cpu_cores": 2, "torch_threads": 2, "gpu": None, "torch": "2",
                           "optuna": "4", "mlflow": "3"},
               "arms": {"search": {"command": "python -m search.run", "rc": 0,
                                   "trials": trials,
                                   "final": {"trial": crowned, "search_value": 0.37, "epochs": 124,
                                             "final_val_miou": 0.59, "best_val_miou": 0.6, "runs": 1,
                                             "champion": {"model": "models:/x@champion"},
                                             "kept_baseline": kept}},
                        "baseline": {"command": "python -m search.run", "rc": 0, "epochs_planned": 230,
                                     "epoch_seconds_used": 7.8, "epochs_from": "search trial 0"}}}
    line = next(x for x in markdown_report(results).splitlines() if x.startswith("- search's final training"))
    assert f"trial {crowned} (the [baseline] configuration)" in line if named else "[baseline]" not in line
    assert "retrained for 124 epochs (the baseline arm: 230)" in line
    assert ("kept by the [confirm] margin 0.05: trial 1 led it by 0.0310" in line) == bool(kept)


def test_report_splits_the_gap_into_configuration_and_epochs() -> None:
    results = {"dataset": "x", "minutes": 30, "command": "c", "data": "d", "test": "t", "work": "w", "started": "s",
               "machine": {"cpu": "cpu", "cpu_cores": 2, "torch_threads": 2, "gpu": None, "torch": "2",
                           "optuna": "4", "mlflow": "3"},
               "arms": {"search": {"final": {"trial": 3, "search_value": 0.6, "epochs": 52, "final_val_miou": 0.76,
                                             "best_val_miou": 0.76, "runs": 1, "champion": None}},
                        "baseline": {"epochs_planned": 118, "epoch_seconds_used": 15.2, "epochs_from": "trial 0"},
                        "control": {"epochs_planned": 52}},
               "gap": {"configuration": {"difference": -0.0072, "low": -0.0438, "high": 0.0313},
                       "epochs": {"difference": -0.0306, "low": -0.0476, "high": -0.0147}}}
    md = markdown_report(results)
    table = md.split("## The gap: configuration or epochs")[1]
    config, epochs = (line for line in table.splitlines() if line.startswith("| configuration") or
                      line.startswith("| epochs"))
    assert "-0.0072" in config and "both trained 52 epochs" in config and config.rstrip(" |").endswith("no")
    assert "-0.0306" in epochs and "52 epochs against 118" in epochs and epochs.rstrip(" |").endswith("yes")
    assert "| control |" in md  # the control's row in the test-set table


def test_tiny_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for arm in ("search", "baseline", "control"):  # MLflow stores with their schema made: 2.5 s each otherwise
        seed_tracking_db(tmp_path / "work" / arm / "mlruns" / "mlflow.db")
    assert main(["--tiny", "--control", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    results = json.loads((out / "realdata.json").read_text())
    search = results["arms"]["search"]
    assert search["rc"] == 0, (out / "search.log").read_text()[-3000:]
    study = optuna.load_study(study_name=search["study"], storage=f"sqlite:///{tmp_path}/work/search/optuna.db")
    states = [t.state for t in study.trials]
    assert search["counts"]["complete"] == states.count(optuna.trial.TrialState.COMPLETE) >= 1
    assert len(search["trials"]) == len(states)
    assert all(r["measured_s"] > 0 for r in search["trials"] if r["state"] == "COMPLETE")
    assert search["value_not_best_val_miou"] == []  # the champion is the trial with the best val mIoU
    # The plan's final training retrained the best complete trial, or the [baseline] when its [confirm]
    # margin discounted the best one's lead; its crowned model is what was scored.
    final = search["final"]
    if kept := final["kept_baseline"]:
        assert kept["trial"] == search["best_trial"] and kept["lead"] <= kept["margin"]
        assert final["trial"] == kept["baseline_trial"] == next(r["trial"] for r in search["trials"] if r["baseline"])
    else:
        assert final["trial"] == search["best_trial"]
    assert final["runs"] == 1 and final["epochs"] >= 1
    assert final["champion"]["model"] == "models:/realdata-tiny@champion"
    assert "--model models:/realdata-tiny@champion" in search["test"]["command"]
    scored = search["test"]["evaluation"]
    assert set(scored["iou"]) == {"background", "bar", "box"} and 0.0 <= scored["miou"] <= 1.0
    assert json.loads((out / "evaluation-search.json").read_text())["miou"] == scored["miou"]
    baseline = results["arms"]["baseline"]
    if "[baseline]" in baseline.get("reason", ""):
        pytest.skip("the plan writes no [baseline] yet (search.plan); the search arm was checked")
    assert baseline["rc"] == 0 and baseline["counts"]["complete"] == 1 and baseline["trials"][0]["baseline"]
    assert baseline["trials"][0]["epochs"] == baseline["epochs_planned"]
    assert 0.0 <= baseline["test"]["evaluation"]["miou"] <= 1.0
    assert "## Per-class IoU on the test set" in (out / "realdata.md").read_text()
    # --control: the [baseline] configuration again, for the final training's epochs, with the baseline's seed.
    control = results["arms"]["control"]
    assert control["rc"] == 0 and control["trials"][0]["baseline"]
    assert control["trials"][0]["epochs"] == control["epochs_planned"] == final["epochs"]
    gap = results["gap"]
    assert gap["configuration"]["difference"] == pytest.approx(scored["miou"] - control["test"]["evaluation"]["miou"])
    assert gap["epochs"]["difference"] == pytest.approx(control["test"]["evaluation"]["miou"]
                                                        - baseline["test"]["evaluation"]["miou"])
    assert "## The gap: configuration or epochs" in (out / "realdata.md").read_text()
