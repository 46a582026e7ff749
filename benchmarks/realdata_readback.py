"""What `benchmarks.realdata` reads back after each arm, through Optuna's and MLflow's own clients: the
trials by state, and per trial its measured seconds per epoch beside the plan's prediction.

The measured figure is the trial's `epoch_seconds` metric (training, validation and the epoch's
logging; `seg.train.EpochResult.seconds`), its median over the epochs the trial ran. The predicted
figure is the trial's `epoch_seconds_predicted`, wherever the harness put it: an MLflow metric, param
or tag of the trial's run, or an Optuna user attr of the trial. A trial without it has no ratio.
"""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from search.study.confirm_record import CONFIRM_ATTR
from search.study.quota import BUDGET_STOP_ATTR, EPOCHS_ATTR
from search.tracking.client import RUN_ID_ATTR

PREDICTED = "epoch_seconds_predicted"
MEASURED = "epoch_seconds"
TOLERANCE = 0.30  # the goal: predicted within ±30 % of measured
FIRST_COMPLETE = 3  # "the first complete trials" the time-model goal is judged on


def metric_values(client: MlflowClient, run_id: str, key: str) -> list[float]:
    """A run's metric history in step order ([] when the run never logged it)."""
    history = client.get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def predicted_seconds(client: MlflowClient, run_id: str | None, trial: optuna.trial.FrozenTrial) -> float | None:
    """The plan's predicted seconds per epoch for this trial, from whichever store holds it."""
    if run_id is not None:
        values = metric_values(client, run_id, PREDICTED)
        if values:
            return values[-1]
        data = client.get_run(run_id).data
        for table in (data.params, data.tags):
            if PREDICTED in table:
                return float(table[PREDICTED])
    value = trial.user_attrs.get(PREDICTED)
    return float(value) if value is not None else None


def trial_row(client: MlflowClient, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial: its state, epochs, best val mIoU, and measured vs predicted seconds per epoch."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    measured = metric_values(client, run_id, MEASURED) if run_id else []
    predicted = predicted_seconds(client, run_id, trial)
    median = statistics.median(measured) if measured else None
    ratio = round(median / predicted, 3) if median is not None and predicted else None
    state = trial.state.name
    if state == "PRUNED" and trial.user_attrs.get(BUDGET_STOP_ATTR):
        state = "PRUNED (budget)"
    values = list(trial.intermediate_values.values())
    epochs = trial.user_attrs.get(EPOCHS_ATTR, len(values))
    wall = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    return {"trial": trial.number, "baseline": bool(trial.user_attrs.get("baseline")), "state": state,
            "epochs": epochs,
            "wall_s_per_epoch": round(wall / epochs, 2) if wall and epochs else None,
            "best_val_miou": round(max(values), 4) if values else None,
            "fail_reason": trial.user_attrs.get("fail_reason"),
            "predicted_s": round(predicted, 2) if predicted is not None else None,
            "measured_s": round(median, 2) if median is not None else None,
            "first_epoch_s": round(measured[0], 2) if measured else None,
            "ratio": ratio, "within_30pct": None if ratio is None else abs(ratio - 1) <= TOLERANCE,
            "run_id": run_id}


def read_study(storage: str, tracking_uri: str, study_name: str) -> dict[str, Any]:
    """The study's trials (rows), counts by state and the time model's verdict, read from the storages."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    client = MlflowClient(tracking_uri=tracking_uri)
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(client, t) for t in trials]
    counts = {"complete": 0, "pruned": 0, "failed": 0, "other": 0}
    for t in trials:
        key = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(t.state.name, "other")
        counts[key] += 1
    counts["cut_by_budget"] = sum(r["state"] == "PRUNED (budget)" for r in rows)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    # A complete trial's value is its best val mIoU (seg.fit keeps the best epoch): anything else means
    # the study crowned its champion by another number, and the test score is of the wrong trial.
    wrong = [t.number for t in complete
             if t.intermediate_values and abs(t.value - max(t.intermediate_values.values())) > 1e-6]
    return {"study": study_name, "trials": rows, "counts": counts, "time_model": time_model(rows),
            "value_not_best_val_miou": wrong,
            "best_trial": best.number if best else None, "best_val_miou": round(best.value, 4) if best else None,
            "epochs_trained": sum(r["epochs"] or 0 for r in rows)}


def read_final(storage: str, study_name: str) -> dict[str, Any] | None:
    """The search's final training (search.confirm's record on the study): the configuration retrained,
    its epochs, val mIoU and wall seconds, and the champion model it crowned; None when there was none."""
    record = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(CONFIRM_ATTR)
    if not record or not record.get("configs"):
        return None
    config = record["configs"][0]
    runs = [r for r in config["runs"] if r.get("status") == "FINISHED"]
    return {"trial": config["trial"], "search_value": config["search_value"], "epochs": record.get("epochs"),
            "final_val_miou": config["final_mean"], "best_val_miou": config["best_mean"],
            "runs": len(runs), "champion": record.get("champion"), "kept_baseline": record.get("kept_baseline")}


def time_model(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Measured/predicted over the first complete trials (the goal) and over every trial with both."""
    both = [r for r in rows if r["ratio"] is not None]
    first = [r for r in both if r["state"] == "COMPLETE"][:FIRST_COMPLETE]
    ratios = [r["ratio"] for r in both]
    return {"tolerance": TOLERANCE, "first_complete_trials": [r["trial"] for r in first],
            "first_complete_ratios": [r["ratio"] for r in first],
            "meets_goal": bool(first) and all(r["within_30pct"] for r in first) if first else None,
            "median_ratio_all": round(statistics.median(ratios), 3) if ratios else None,
            "within_30pct_all": f"{sum(r['within_30pct'] for r in both)}/{len(both)}" if both else None,
            "trials_without_prediction": sum(r["predicted_s"] is None and r["measured_s"] is not None
                                             for r in rows)}


def baseline_epoch_seconds(search: dict[str, Any]) -> tuple[float | None, str]:
    """Seconds per epoch of the baseline configuration as the search measured it (its trial 0), else the
    prediction; with where the figure came from."""
    rows = [r for r in search["trials"] if r["baseline"]] or [r for r in search["trials"] if r["trial"] == 0]
    for row in rows:
        if row["wall_s_per_epoch"]:  # the trial's whole wall time (logging, artifacts) over its epochs
            return row["wall_s_per_epoch"], f"search trial {row['trial']} (the baseline): its wall time / epochs"
        if row["measured_s"]:
            return row["measured_s"], f"measured: median epoch of search trial {row['trial']} (the baseline)"
        if row["predicted_s"]:
            return row["predicted_s"], f"predicted for search trial {row['trial']} (it logged no epoch time)"
    return None, "the search has no baseline trial with an epoch time"
