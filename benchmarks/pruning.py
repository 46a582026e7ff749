"""Pruning efficiency: the same study (same sampler seed, same trial count or epoch budget) under several pruners.

For each seed and pruner, a fresh study in temp storages runs `trials` trials of at most `epochs`
epochs through the real Objective, or, with `total_epochs`, trials until the study has trained that
many epochs (`search.run --total-epochs`: the last trial stops when the budget is spent), for the
equal-budget comparison of `benchmarks.equal_budget`. Epochs trained are counted from each trial's
reported intermediate values (one per epoch); the best val mIoU is the study's best completed value.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from benchmarks.harness import harness_settings, optimize, prepare_study, temp_storages
from search.study.definition import load_study

PRUNERS = ("none", "sha", "hyperband", "median")
EPOCHS_GOAL = 3.0  # >= 3x fewer epochs than no pruning
MIOU_GAP_GOAL = 0.01  # best val mIoU within 0.01 of no pruning


def run_one(root: Path, study_file: str, pruner: str, seed: int, trials: int | None, epochs: int,
            device: str, total_epochs: int | None = None) -> dict[str, Any]:
    """One study run (its own study name in the shared temp storages under `root`); returns its figures.

    The wall time is `study.optimize` alone: storage schema and dataset loading are done before it.
    """
    name = f"{load_study(study_file).name}-{pruner}-s{seed}"
    settings = harness_settings(root, study_file, pruner=pruner, epochs=epochs, seed=seed, device=device,
                                study_name=name, total_epochs=total_epochs)
    study, ctx = prepare_study(settings)
    run = optimize(study, ctx, trials, settings.storage, total_epochs)
    return summarize_trials(run.study.trials, run.wall_s) | {"pruner": pruner, "seed": seed}


def summarize_trials(trials: Sequence[optuna.trial.FrozenTrial], wall_s: float) -> dict[str, Any]:
    """Epochs, trial states and best values of one finished study."""
    states = [t.state for t in trials]
    complete = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    seen = [v for t in trials for v in t.intermediate_values.values()]
    return {
        "wall_s": round(wall_s, 2),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "trials": len(trials),
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        # The study's answer: the best completed trial (what `study.best_value` returns).
        "best_val_miou": round(max(complete), 4) if complete else None,
        # Also the best mIoU measured at any epoch of any trial, pruned ones included.
        "best_seen_val_miou": round(max(seen), 4) if seen else None,
        # Per trial: its state and val mIoU per epoch, so pruner settings can be replayed offline.
        "curves": [{"number": t.number, "state": t.state.name,
                    "values": [round(t.intermediate_values[s], 4) for s in sorted(t.intermediate_values)]}
                   for t in trials],
    }


def _mean(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return round(statistics.fmean(clean), 4) if clean and len(clean) == len(values) else None


def compare(runs: Sequence[dict[str, Any]], pruners: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per pruner: means over seeds, and per-seed epochs ratio and mIoU gap against no pruning."""
    base = {r["seed"]: r for r in runs if r["pruner"] == "none"}
    table: dict[str, dict[str, Any]] = {}
    for pruner in pruners:
        mine = [r for r in runs if r["pruner"] == pruner]
        if not mine:
            continue
        ratios = [base[r["seed"]]["epochs_trained"] / r["epochs_trained"]
                  if r["seed"] in base and r["epochs_trained"] else None for r in mine]
        gaps = [_gap(base.get(r["seed"]), r) for r in mine]
        row = {"seeds": [r["seed"] for r in mine],
               "mean_epochs_trained": _mean([r["epochs_trained"] for r in mine]),
               "mean_wall_s": _mean([r["wall_s"] for r in mine]),
               "mean_best_val_miou": _mean([r["best_val_miou"] for r in mine]),
               "epochs_ratio_vs_none": [round(x, 3) if x is not None else None for x in ratios],
               "mean_epochs_ratio_vs_none": _mean(ratios),
               "miou_gap_vs_none": gaps,  # none's best minus this pruner's best (positive = worse)
               "mean_miou_gap_vs_none": _mean(gaps),
               "wall_ratio_vs_none": [round(base[r["seed"]]["wall_s"] / r["wall_s"], 3) if r["seed"] in base else None
                                      for r in mine]}
        row["meets_goal"] = _meets_goal(row) if pruner != "none" else None
        table[pruner] = row
    return table


def _gap(base: dict[str, Any] | None, run: dict[str, Any]) -> float | None:
    if base is None or base["best_val_miou"] is None or run["best_val_miou"] is None:
        return None
    return round(base["best_val_miou"] - run["best_val_miou"], 4)


def _meets_goal(row: dict[str, Any]) -> bool | None:
    ratio, gap = row["mean_epochs_ratio_vs_none"], row["mean_miou_gap_vs_none"]
    if ratio is None or gap is None:
        return None
    return ratio >= EPOCHS_GOAL and gap <= MIOU_GAP_GOAL


def measure(study_file: str, pruners: Sequence[str], seeds: Sequence[int], trials: int | None, epochs: int, device: str,
            on_run: Callable[[dict[str, Any]], None] | None = None, total_epochs: int | None = None) -> dict[str, Any]:
    """Every (seed, pruner) run in turn; `on_run(section_so_far)` after each, so partial results are kept."""
    result: dict[str, Any] = {"study": study_file, "trials": trials, "max_epochs": epochs,
                              "total_epochs": total_epochs, "seeds": list(seeds),
                              "pruners": list(pruners), "device": device, "runs": [], "summary": {},
                              "goal": {"epochs_ratio_at_least": EPOCHS_GOAL, "miou_gap_at_most": MIOU_GAP_GOAL},
                              "complete": False}
    # One pair of temp storages for all runs: the MLflow schema is built once, not per run.
    with temp_storages("bench-prune-") as root:
        for seed in seeds:
            for pruner in pruners:
                result["runs"].append(run_one(root, study_file, pruner, seed, trials, epochs, device, total_epochs))
                result["summary"] = compare(result["runs"], pruners)
                result["tables"] = tables(result)
                if on_run is not None:
                    on_run(result)
    result["complete"] = True
    return result


def tables(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for the printed tables: means per pruner, then every run."""
    means = [{"pruner": p, "mean epochs": r["mean_epochs_trained"],
              "epochs ratio vs none": r["mean_epochs_ratio_vs_none"],
              "mean wall s": r["mean_wall_s"], "mean best mIoU": r["mean_best_val_miou"],
              "mIoU gap vs none": r["mean_miou_gap_vs_none"], "goal met": r["meets_goal"]}
             for p, r in result["summary"].items()]
    base = {r["seed"]: r for r in result["runs"] if r["pruner"] == "none"}
    runs = [{k: r[k] for k in ("seed", "pruner", "epochs_trained")}
            | {"x fewer than none": round(base[r["seed"]]["epochs_trained"] / r["epochs_trained"], 2)
               if r["seed"] in base and r["epochs_trained"] else None,
               "best_val_miou": r["best_val_miou"], "gap to none": _gap(base.get(r["seed"]), r)}
            | {k: r[k] for k in ("wall_s", "best_seen_val_miou", "complete", "pruned", "failed")}
            for r in result["runs"]]
    return {"per pruner (mean over seeds)": means, "per run": runs}


def measure_sizes(sizes: Any, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The CLI's entry: pruning efficiency at the run's sizes (CPU unless --device says otherwise)."""
    device = "cpu" if sizes.device == "auto" else sizes.device
    return measure(sizes.pruning_study, sizes.pruners, sizes.seeds, sizes.pruning_trials, sizes.pruning_epochs, device,
                   on_run=keep, total_epochs=sizes.pruning_total_epochs)
