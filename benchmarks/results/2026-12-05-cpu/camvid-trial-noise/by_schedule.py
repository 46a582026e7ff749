"""Mean best-so-far val mIoU at each epoch, one-cycle trials against the other schedules (no pruning).

    PYTHONPATH=. python benchmarks/results/2026-12-05-cpu/camvid-trial-noise/by_schedule.py STORAGE::STUDY ...
"""
import statistics
import sys

import optuna

from benchmarks.replay import complete_trials

optuna.logging.set_verbosity(optuna.logging.ERROR)
curves = []  # (schedule, values per epoch)
for arg in sys.argv[1:]:
    storage, name = arg.split("::")
    for t in complete_trials(storage, name):
        values = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        curves.append((t.params.get("train.scheduler", "onecycle"), values))  # fixed (not a param): the baseline's
length = max(len(v) for _, v in curves)
print("| epoch | one-cycle | other schedules |\n|---:|---:|---:|")
for k in range(1, length + 1):
    one = [max(v[:k]) for s, v in curves if s == "onecycle" and len(v) == length]
    other = [max(v[:k]) for s, v in curves if s != "onecycle" and len(v) == length]
    print(f"| {k} | {statistics.fmean(one):.3f} (n={len(one)}) | {statistics.fmean(other):.3f} (n={len(other)}) |")
