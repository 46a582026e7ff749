"""Replay pruner settings on learning curves recorded without pruning: epochs saved and mIoU lost, in seconds.

    python -m benchmarks.replay benchmarks/results/2026-11-24-cpu/raw/cpu-pruning-t1-none-s01-2026-11-24.json \
        benchmarks/results/2026-11-24-cpu/raw/cpu-pruning-t1-none-s2-2026-11-24.json
    python -m benchmarks.replay RESULTS.json --pruner sha:reduction_factor=4 --pruner median:n_startup_trials=3
    python -m benchmarks.replay --from-study sqlite:///runs/optuna.db nop-s10 --from-study URL NAME ... \
        --pruner percentile:percentile=30.0,n_startup_trials=2,n_warmup_steps=2 --budgets 40:110:10

Each "none" run of a pruning benchmark JSON keeps every trial's val mIoU per epoch; so does any study
run with `search.run --pruner none` (`--from-study STORAGE STUDY`: its complete trials, in trial order,
each study counted as one seed). Replaying
feeds those curves, in trial order, through the real Optuna pruner (report + should_prune per
epoch) and counts the epochs it lets through and the best value it keeps (a trial's value is its
best epoch, as in the Objective). What a replay cannot show: with a real pruner, TPE also learns
from pruned trials, so the later trials' parameters differ. It is for choosing settings; the
benchmark's real runs are the measurement.

With `--budgets 50:230:10`, a table compares each setting with no pruning at equal epoch budgets
(the measure of `benchmarks.equal_budget`) and counts the trials it cuts after their first epoch.

A further table says how early a trial's value predicts its end, which bounds what any pruner can
save without loss: per epoch, the rank correlation between each trial's best value so far and its
final value, and how many of the final top tenth stood below that epoch's median (what a median
pruner at that epoch would cut).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from scipy.stats import spearmanr

from benchmarks.equal_budget import best_at, budgets_arg, epoch1_cuts
from benchmarks.merge import differing_key, pruning_section
from benchmarks.tables import markdown_table
from search.study.lookup import StudyNotFoundError, load_named_study
from search.study.samplers_pruners import build_pruner, parse_pruner

DEFAULT_SETTINGS = ("sha", "sha:reduction_factor=4", "sha:min_resource=2", "sha:min_early_stopping_rate=1",
                    "hyperband", "median", "median:n_startup_trials=3",
                    "median:n_startup_trials=1,n_warmup_steps=0")


def replay_curves(curves: Sequence[Sequence[float]], settings: dict[str, Any], max_epochs: int,
                  study_name: str = "replay") -> list[dict[str, Any]]:
    """Run the curves through the pruner `settings` builds; each trial as the pruned run would record it
    (number, state, the values it reported), as `benchmarks.pruning` keeps curves.

    Hyperband puts a trial in a bracket by a hash of the study name and trial number, so the name
    is the benchmark's own (`<study>-<pruner>-s<seed>`) to replay the same brackets.
    """
    study = optuna.create_study(study_name=study_name, direction="maximize",
                                pruner=build_pruner(settings, max_epochs))
    replayed = []
    for number, values in enumerate(curves):
        trial, state = study.ask(), "COMPLETE"
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
            if step < len(values) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                state = "PRUNED"
                break
        else:
            study.tell(trial, max(values))
        replayed.append({"number": number, "state": state, "values": list(values[:step])})
    return replayed


def replay(curves: Sequence[Sequence[float]], settings: dict[str, Any], max_epochs: int,
           study_name: str = "replay") -> dict[str, Any]:
    """Epochs the pruner lets through and the best trial value it keeps."""
    replayed = replay_curves(curves, settings, max_epochs, study_name)
    complete = [max(c["values"]) for c in replayed if c["state"] == "COMPLETE"]
    return {"epochs_trained": sum(len(c["values"]) for c in replayed),
            "best_val_miou": max(complete) if complete else None}


def budget_rows(curves_by_seed: dict[int, list[list[float]]], settings: Sequence[str], max_epochs: int,
                budgets: Sequence[int], study: str = "replay") -> list[dict[str, Any]]:
    """At equal epoch budgets: per setting and seed, Δ = best(replayed pruned, B) − best(unpruned, B) at
    the last budget and averaged over the budgets (`benchmarks.equal_budget`), and the trials cut after
    their first epoch. When the recorded trials run out before B, the pruned arm's answer is its best
    over all of them (more trials could only raise it): a lower bound, marked ≥."""
    rows = []
    for text in settings:
        setting, finals, areas, cuts, short = parse_pruner(text), [], [], [], False
        for seed, curves in curves_by_seed.items():
            unpruned = [{"number": i, "state": "COMPLETE", "values": v} for i, v in enumerate(curves)]
            pruned = replay_curves(curves, setting, max_epochs, f"{study}-{setting['name']}-s{seed}")
            total = sum(len(c["values"]) for c in pruned)
            short = short or total < max(budgets)
            deltas = [best_at(pruned, min(b, total)) - best_at(unpruned, b) for b in budgets]
            finals.append(deltas[-1])
            areas.append(statistics.fmean(deltas))
            cuts.append(epoch1_cuts(pruned))
        mark = "≥ " if short else ""
        rows.append({"pruner": text, "cut after epoch 1, per seed": " ".join(map(str, cuts)),
                     f"Δ@{max(budgets)} per seed": " ".join(f"{d:+.3f}" for d in finals),
                     f"mean Δ@{max(budgets)}": f"{mark}{statistics.fmean(finals):+.4f}",
                     "area per seed": " ".join(f"{a:+.3f}" for a in areas),
                     "mean area": f"{mark}{statistics.fmean(areas):+.4f}"})
    return rows


def early_ranks(curves: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Per epoch k: Spearman's rho of best-so-far at k against the final best, and how many of the final
    top tenth (at least one trial) were below the median best-so-far at k. Full-length curves only."""
    length = max(len(v) for v in curves)
    full = [v for v in curves if len(v) == length]
    final = [max(v) for v in full]
    n_top = max(1, len(full) // 10)
    top = sorted(range(len(full)), key=final.__getitem__, reverse=True)[:n_top]
    final_varies = len(set(final)) > 1
    rows = []
    for k in range(1, length + 1):
        so_far = [max(v[:k]) for v in full]
        ranked = final_varies and len(set(so_far)) > 1  # else no ranking: one trial, or all equal
        rho = f"{spearmanr(so_far, final).statistic:.2f}" if ranked else "—"
        median = statistics.median(so_far)
        below = sum(so_far[i] < median for i in top)
        rows.append({"epoch": k, "rank correlation with the final value": rho,
                     "final top tenth below the median here": f"{below} of {n_top}"})
    return rows


def no_pruning_curves(section: dict[str, Any]) -> tuple[str, dict[int, list[list[float]]]]:
    """The study's name and, per seed, the curves of a pruning section's 'none' runs.

    Those runs trained every trial to the end.
    """
    curves = {r["seed"]: [c["values"] for c in r["curves"]] for r in section.get("runs", [])
              if r["pruner"] == "none" and "curves" in r}
    return Path(str(section.get("study", "replay"))).stem, curves


def complete_trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """A stored study's complete trials, in trial order. A missing storage or study is refused (ValueError,
    naming the stored studies), never created empty by a typo (`search.study.lookup`)."""
    try:
        study = load_named_study(study_name, storage)
    except StudyNotFoundError as exc:
        raise ValueError(f"{storage}: {exc}") from None
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def study_curves(storage: str, study_name: str) -> list[list[float]]:
    """Each complete trial's reported values in step order, in trial order: a study run without pruning."""
    return [[t.intermediate_values[s] for s in sorted(t.intermediate_values)]
            for t in complete_trials(storage, study_name) if t.intermediate_values]


def compare(curves_by_seed: dict[int, list[list[float]]], settings: Sequence[str], max_epochs: int,
            study: str = "replay") -> list[dict[str, Any]]:
    """One row per setting: per-seed and mean epochs ratio and mIoU gap against no pruning."""
    rows = []
    for text in settings:
        ratios, gaps = [], []
        setting = parse_pruner(text)
        for seed, curves in curves_by_seed.items():
            full = sum(len(v) for v in curves)
            best = max(max(v) for v in curves)
            got = replay(curves, setting, max_epochs, f"{study}-{setting['name']}-s{seed}")
            ratios.append(full / got["epochs_trained"])
            gaps.append(best - got["best_val_miou"])
        rows.append({"pruner": text, "epochs ratio per seed": " ".join(f"{r:.2f}" for r in ratios),
                     "mean ratio": f"{statistics.fmean(ratios):.2f}",
                     "gap per seed": " ".join(f"{g:.4f}" for g in gaps),
                     "mean gap": f"{statistics.fmean(gaps):.4f}", "max gap": f"{max(gaps):.4f}"})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="*", type=Path, help="pruning benchmark JSON files with 'none' runs")
    p.add_argument("--from-study", action="append", nargs=2, metavar=("STORAGE", "STUDY"), default=[],
                   help="a study run with --pruner none: its complete trials' curves, as one more seed")
    p.add_argument("--pruner", action="append", metavar="NAME[:KEY=VALUE,...]",
                   help=f"pruner settings to replay (default: {' '.join(DEFAULT_SETTINGS)})")
    p.add_argument("--budgets", type=budgets_arg, metavar="LOW:HIGH:STEP",
                   help="also compare at equal epoch budgets, e.g. 50:230:10 (benchmarks.equal_budget)")
    args = p.parse_args(argv)
    if not args.results and not args.from_study:
        p.error("give pruning benchmark JSON files, --from-study STORAGE STUDY, or both")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    curves: dict[int, list[list[float]]] = {}
    source: dict[int, Path] = {}  # seed -> the file its curves came from
    max_epochs, study, first = 0, None, None  # first: (path, pruning section) of the first file
    for path in args.results:
        try:
            section = pruning_section(path)
            file_study, found = no_pruning_curves(section)
        except ValueError as exc:  # MergeError: unreadable, or no pruning runs; names the file
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not found:
            print(f"error: {path}: no 'none' run with recorded curves (benchmarks from before curves were kept)",
                  file=sys.stderr)
            return 2
        # Curves of one study only, each seed once: a mix would replay one study's brackets on another's curves.
        if study is not None and file_study != study:
            print(f"error: {path}: study {file_study!r}, but earlier files are {study!r}", file=sys.stderr)
            return 2
        # Trial count, epochs and device as merge checks them: max_epochs sets SHA's and Hyperband's rungs.
        if first is not None and (key := differing_key(section, first[1], ("trials", "max_epochs", "device"))):
            print(f"error: {path}: {key}={section.get(key)!r}, but {first[0]} has {first[1].get(key)!r}",
                  file=sys.stderr)
            return 2
        if twice := sorted(set(found) & set(curves)):
            print(f"error: {path}: seed {twice[0]} is also in {source[twice[0]]}", file=sys.stderr)
            return 2
        study, first = file_study, first or (path, section)
        source |= dict.fromkeys(found, path)
        curves |= found
        max_epochs = max(max_epochs, *(len(v) for c in found.values() for v in c))
    for storage, name in args.from_study:
        try:
            found_curves = study_curves(storage, name)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not found_curves:
            print(f"error: {storage}: study {name!r} has no complete trial with reported values", file=sys.stderr)
            return 2
        seed = max(curves, default=-1) + 1
        curves[seed] = found_curves
        max_epochs = max(max_epochs, *(len(v) for v in found_curves))
    try:
        rows = compare(dict(sorted(curves.items())), args.pruner or DEFAULT_SETTINGS, max_epochs, study or "replay")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trials = "/".join(str(n) for n in sorted({len(c) for c in curves.values()}))
    print(f"replayed on seeds {sorted(curves)}: {trials} trials of at most {max_epochs} epochs")
    print("\n".join(markdown_table(rows)))
    if args.budgets:
        print(f"\nat equal epoch budgets {args.budgets[0]}..{args.budgets[-1]} (Δ = best pruned − best unpruned)")
        print("\n".join(markdown_table(budget_rows(dict(sorted(curves.items())), args.pruner or DEFAULT_SETTINGS,
                                                   max_epochs, args.budgets, study or "replay"))))
    every = [v for c in curves.values() for v in c]
    print(f"\nhow early the value predicts the end, over the {sum(len(v) == max_epochs for v in every)} "
          f"full-length curves of seeds {sorted(curves)}")
    print("\n".join(markdown_table(early_ranks(every))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
