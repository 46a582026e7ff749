"""Harness overhead: one config trained by bare `seg.train.fit` and as a real harness trial.

The harness trial goes through `search.session.prepare` and `Objective` with temp sqlite storages:
MLflow run, params, per-epoch batched metrics, Optuna report/should_prune (median pruner, which
cannot prune the first trial), artifacts. The bare run trains the trial's own config (same seed,
data and epochs) with no callback. Two figures: the wall-clock ratio of the two runs, and the
harness seconds the trial measured inside itself (its `timing` user attr), which is not subject
to run-to-run noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.bench_settings import Sizes, fixed_study_toml, write_study
from benchmarks.harness import harness_settings, optimize, prepare_study, temp_storages
from seg.config import Config
from seg.loaders import resolve_dataset
from seg.train import fit

GOAL = 0.02


def harness_trial(cfg: Config) -> tuple[dict[str, Any], Config, Any]:
    """One trial of a study whose space is fixed to `cfg`; returns (timing attr, trained config, data)."""
    with temp_storages("bench-overhead-") as root:
        study_file = write_study(fixed_study_toml(cfg, "bench-overhead"), root, "bench-overhead")
        settings = harness_settings(root, str(study_file), epochs=cfg.train.epochs, device=cfg.train.device)
        study, ctx = prepare_study(settings)
        run = optimize(study, ctx, 1, settings.storage)
        trial = run.study.trials[0]
        if trial.state.name != "COMPLETE":
            raise RuntimeError(f"the overhead trial ended {trial.state.name}: {trial.user_attrs.get('fail_reason')}")
        timing = dict(trial.user_attrs["timing"])
        timing["wall_s"] = round(run.wall_s, 3)
        return timing, Config.from_dict(trial.user_attrs["config"]), ctx.data


def bare_fit(cfg: Config, data: Any) -> float:
    start = time.perf_counter()
    fit(cfg, data)
    return time.perf_counter() - start


def measure(sizes: Sizes, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = sizes.study_config(sizes.overhead_epochs)
    # Untimed warm-up epoch: the first fit in a process pays lazy imports and thread-pool start-up,
    # which would otherwise land on whichever of the two runs goes first.
    bare_fit(cfg.replace(train={"epochs": 1}), resolve_dataset(cfg.data))
    pairs = []
    for _ in range(sizes.overhead_repeats):
        timing, trained, data = harness_trial(cfg)
        bare_s = bare_fit(trained, data)
        pairs.append({"bare_fit_s": round(bare_s, 3), "trial_total_s": timing["total_s"],
                      "trial_training_s": timing["training_s"], "trial_harness_s": timing["harness_s"],
                      "trial_epoch_hooks_s": timing["epoch_hooks_s"], "trial_artifacts_s": timing["artifacts_s"],
                      "wall_ratio_trial_minus_artifacts_vs_bare":
                          round((timing["total_s"] - timing["artifacts_s"]) / bare_s, 4),
                      "harness_fraction_of_training": round(timing["harness_s"] / timing["training_s"], 5)})
    med = statistics.median
    wall_overhead = med(p["wall_ratio_trial_minus_artifacts_vs_bare"] for p in pairs) - 1
    harness_fraction = med(p["harness_fraction_of_training"] for p in pairs)
    artifacts_fraction = med(p["trial_artifacts_s"] / p["trial_training_s"] for p in pairs)
    result = {
        "config": trained.flatten() if pairs else None, "epochs": sizes.overhead_epochs, "repeats": pairs,
        "bare_fit_s_median": round(med(p["bare_fit_s"] for p in pairs), 3),
        "trial_s_median": round(med(p["trial_total_s"] for p in pairs), 3),
        # (trial without artifacts) / bare - 1: includes run-to-run noise of the training itself.
        "overhead_wall_ratio": round(wall_overhead, 4),
        # harness seconds measured inside the trial / its training seconds: the noise-free figure.
        "overhead_harness_fraction": round(harness_fraction, 5),
        "artifacts_fraction": round(artifacts_fraction, 4),
        "goal": GOAL, "meets_goal": harness_fraction < GOAL,
    }
    result["tables"] = {"bare fit vs harness trial": [
        {"bare fit s": p["bare_fit_s"], "trial s": p["trial_total_s"], "trial training s": p["trial_training_s"],
         "harness s": p["trial_harness_s"], "artifacts s": p["trial_artifacts_s"],
         "harness / training": p["harness_fraction_of_training"],
         "(trial - artifacts) / bare": p["wall_ratio_trial_minus_artifacts_vs_bare"]} for p in pairs]}
    keep(result)
    return result
