"""Harness overhead: one config trained by bare `seg.train.fit` and as a real harness trial, the trial
once with MLflow's system metrics monitor off and once on (the default), side by side.

The harness trial goes through `search.session.prepare` and `Objective` with temp sqlite storages:
MLflow run, params, dataset inputs, per-epoch batched metrics, Optuna report/should_prune (median
pruner, which cannot prune the first trial), artifacts and the logged model. The bare run trains
the trial's own config (same seed, data and epochs) with no callback. Figures per variant: the
harness seconds the trial measured inside itself (its `timing` user attr) against its training
seconds, which is not subject to run-to-run noise, and the wall-clock ratio against the bare run.
The monitor samples on its own thread while the model trains, so its cost is not in the trial's
harness seconds: the trial records the CPU seconds of that thread (`system_metrics_cpu_s`), and the
harness fraction counts them, as if every one of them were taken from training. The on/off ratio
of the trials' wall seconds (artifacts left out) is stated too, but on a shared machine it is as
noisy as any two wall-clock runs. The three runs of a repeat take turns in a rotating order, so a
slower or faster spell of a shared machine does not land on one variant.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.bench_settings import Sizes, fixed_study_toml, write_study
from benchmarks.harness import harness_settings, optimize, prepare_study, temp_storages
from search.tracking.system_metrics import DEFAULT_INTERVAL_S
from seg.config import Config
from seg.train import fit

GOAL = 0.02
VARIANTS = ("off", "on")  # system metrics of the trial's run


def harness_trial(cfg: Config, system_metrics: bool) -> tuple[dict[str, Any], Config, Any]:
    """One trial of a study whose space is fixed to `cfg`; returns (timing attr, trained config, data)."""
    cpu = time.process_time()
    with temp_storages("bench-overhead-") as root:
        study_file = write_study(fixed_study_toml(cfg, "bench-overhead"), root, "bench-overhead")
        settings = harness_settings(root, str(study_file), epochs=cfg.train.epochs, device=cfg.train.device,
                                    system_metrics=system_metrics)
        study, ctx = prepare_study(settings)
        run = optimize(study, ctx, 1, settings.storage)
        trial = run.study.trials[0]
        if trial.state.name != "COMPLETE":
            raise RuntimeError(f"the overhead trial ended {trial.state.name}: {trial.user_attrs.get('fail_reason')}")
        timing = dict(trial.user_attrs["timing"])
        timing["wall_s"] = round(run.wall_s, 3)
        timing["process_cpu_s"] = round(time.process_time() - cpu, 3)  # every thread, set-up and artifacts too
        return timing, Config.from_dict(trial.user_attrs["config"]), ctx.data


def bare_fit(cfg: Config, data: Any) -> float:
    start = time.perf_counter()
    fit(cfg, data)
    return time.perf_counter() - start


def one_repeat(cfg: Config, trained: Config, data: Any, turn: int) -> dict[str, Any]:
    """Bare fit (of the config as the trial trains it) and both trials, in an order that rotates with `turn`."""
    runs: dict[str, Any] = {}
    for name in (["bare", *VARIANTS] * 2)[turn % 3:][:3]:
        if name == "bare":
            runs[name] = bare_fit(trained, data)
        else:
            runs[name] = harness_trial(cfg, system_metrics=name == "on")[0]
    bare_s = runs["bare"]
    pair: dict[str, Any] = {"bare_fit_s": round(bare_s, 3)}
    for name in VARIANTS:
        t = runs[name]
        harness_s = t["harness_s"] + t["system_metrics_cpu_s"]
        pair[name] = {"trial_total_s": t["total_s"], "trial_training_s": t["training_s"],
                      "trial_harness_s": t["harness_s"], "trial_epoch_hooks_s": t["epoch_hooks_s"],
                      "trial_artifacts_s": t["artifacts_s"], "trial_system_metrics_cpu_s": t["system_metrics_cpu_s"],
                      "trial_process_cpu_s": t["process_cpu_s"],
                      "wall_ratio_trial_minus_artifacts_vs_bare": round((t["total_s"] - t["artifacts_s"]) / bare_s, 4),
                      "harness_fraction_of_training": round(harness_s / t["training_s"], 5),
                      "system_metrics_fraction_of_training": round(t["system_metrics_cpu_s"] / t["training_s"], 5)}
    on, off = pair["on"], pair["off"]
    pair["on_vs_off_trial_minus_artifacts"] = round(
        (on["trial_total_s"] - on["trial_artifacts_s"]) / (off["trial_total_s"] - off["trial_artifacts_s"]), 4)
    # CPU seconds of the whole trial (all its threads): less sensitive than wall time to other
    # processes on the machine, and what a monitor that made training work harder would raise.
    pair["on_vs_off_process_cpu"] = round(on["trial_process_cpu_s"] / off["trial_process_cpu_s"], 4)
    return pair


def measure(sizes: Sizes, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = sizes.study_config(sizes.overhead_epochs)
    # Untimed one-epoch warm-up trial: the first fit and trial in a process pay lazy imports and
    # thread-pool start-up, which would otherwise land on whichever run goes first. It also gives
    # the config as a trial trains it (seed, device), which the bare runs train.
    _, trained, data = harness_trial(cfg.replace(train={"epochs": 1}), system_metrics=False)
    trained = trained.replace(train={"epochs": cfg.train.epochs})
    pairs = [one_repeat(cfg, trained, data, turn) for turn in range(sizes.overhead_repeats)]
    med = statistics.median
    variants = {}
    for name in VARIANTS:
        rows = [p[name] for p in pairs]
        fraction = med(r["harness_fraction_of_training"] for r in rows)
        variants[name] = {
            "trial_s_median": round(med(r["trial_total_s"] for r in rows), 3),
            # (trial without artifacts) / bare - 1: includes run-to-run noise of the training itself.
            "overhead_wall_ratio": round(med(r["wall_ratio_trial_minus_artifacts_vs_bare"] for r in rows) - 1, 4),
            # (harness seconds + the monitor thread's CPU seconds) measured inside the trial / its
            # training seconds: the noise-free figure.
            "overhead_harness_fraction": round(fraction, 5),
            "system_metrics_fraction": round(med(r["system_metrics_fraction_of_training"] for r in rows), 5),
            "artifacts_fraction": round(med(r["trial_artifacts_s"] / r["trial_training_s"] for r in rows), 4),
            "meets_goal": fraction < GOAL}
    on_vs_off = med(p["on_vs_off_trial_minus_artifacts"] for p in pairs)
    cpu_on_vs_off = med(p["on_vs_off_process_cpu"] for p in pairs)
    result = {
        "config": trained.flatten(), "epochs": sizes.overhead_epochs, "repeats": pairs,
        "bare_fit_s_median": round(med(p["bare_fit_s"] for p in pairs), 3),
        "system_metrics_interval_s": DEFAULT_INTERVAL_S, "variants": variants,
        # The default (system metrics on) is the headline figure.
        **{key: variants["on"][key] for key in ("trial_s_median", "overhead_wall_ratio", "overhead_harness_fraction",
                                                "artifacts_fraction")},
        # (trial with system metrics - artifacts) / (the same without) - 1: wall clock, noisy.
        "system_metrics_wall_cost": round(on_vs_off - 1, 4),
        # (process CPU seconds of the trial with system metrics) / (the same without) - 1.
        "system_metrics_cpu_cost": round(cpu_on_vs_off - 1, 4),
        "goal": GOAL, "meets_goal": variants["on"]["meets_goal"],
    }
    result["tables"] = {"bare fit vs harness trial, system metrics off and on": [
        {"bare fit s": p["bare_fit_s"], **{f"{key} ({name})": p[name][field] for name in VARIANTS for key, field in (
            ("trial s", "trial_total_s"), ("harness s", "trial_harness_s"), ("artifacts s", "trial_artifacts_s"),
            ("monitor CPU s", "trial_system_metrics_cpu_s"),
            ("harness / training", "harness_fraction_of_training"),
            ("(trial - artifacts) / bare", "wall_ratio_trial_minus_artifacts_vs_bare"))},
         "(trial - artifacts) on / off": p["on_vs_off_trial_minus_artifacts"],
         "trial CPU s on / off": p["on_vs_off_process_cpu"]} for p in pairs]}
    keep(result)
    return result
