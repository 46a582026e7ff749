"""How each optimizer and schedule fared in stored short-trial studies (the M = 30 real-photo searches).

For every trial: its optimizer and schedule, its best val mIoU up to epoch 2 (every trial reaches it
before the percentile pruner may cut) against the study's trial 0 (the enqueued `[baseline]`, Adam with
one-cycle) up to the same epoch, and whether it never left the one-class start: its best value within
0.005 of the mIoU of predicting the commonest class everywhere (that class's share of the training
pixels over the number of classes, from the plan's fingerprint). Then the same, pooled by optimizer and
schedule.

    PYTHONPATH=. python benchmarks/results/2026-12-06-cpu/short-trial-space/trial_outcomes.py \
        sqlite:////tmp/rd25/membrane-m30-seed4/search/optuna.db::realdata-membrane ...
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

import optuna

EARLY = 2  # epochs every trial reaches
ONE_CLASS = 0.005  # a best value this close to the one-class mIoU: it never left it


def best_up_to(trial: optuna.trial.FrozenTrial, epoch: int) -> float:
    return max(v for step, v in trial.intermediate_values.items() if step <= epoch)


def one_class_miou(study: optuna.Study) -> float:
    """The mIoU of predicting the commonest training class everywhere (each class present in val)."""
    pixels = [float(n) for n in study.user_attrs["plan_fingerprint"]["train_class_pixels"].values()]
    return max(pixels) / sum(pixels) / len(pixels)


def main(specs: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pooled: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    for spec in specs:
        storage, name = spec.split("::")
        study = optuna.load_study(study_name=name, storage=storage)
        trials = [t for t in study.trials if t.intermediate_values]
        base, one = best_up_to(trials[0], EARLY), one_class_miou(study)
        print(f"\n{storage} ({name}): trial 0 up to epoch {EARLY}: {base:.3f}; one class everywhere: {one:.3f}")
        for t in trials:
            early = best_up_to(t, EARLY)
            values = [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
            stuck = abs(max(values) - one) <= ONE_CLASS
            key = (t.params.get("train.optimizer", "?"), t.params.get("train.scheduler", "?"))
            if t.number > 0:
                pooled[key].append((early - base, stuck))
            print(f"  trial {t.number:2d} {t.state.name:8s} {key[0]:7s} {key[1]:8s} epochs {len(values):2d} "
                  f"up to {EARLY}: {early:.3f} ({early - base:+.3f}) best {max(values):.3f}"
                  f"{'  one class' if stuck else ''}")
    print(f"\nsampled trials (trial 0 left out), by optimizer and schedule: n, one class, median and range of "
          f"(best up to epoch {EARLY}) - trial 0's")
    for key in sorted(pooled):
        deltas = [d for d, _ in pooled[key]]
        n_stuck = sum(f for _, f in pooled[key])
        print(f"  {key[0]:7s} {key[1]:8s} n {len(deltas):2d} one class {n_stuck:2d}  "
              f"median {statistics.median(deltas):+.3f} [{min(deltas):+.3f}, {max(deltas):+.3f}]")
    for label, pick in (("rmsprop", lambda k: k[0] == "rmsprop"),
                        ("sgd", lambda k: k[0] == "sgd"),
                        ("no schedule", lambda k: k[1] == "none"),
                        ("adam or adamw", lambda k: k[0] in ("adam", "adamw"))):
        rows = [r for k, v in pooled.items() if pick(k) for r in v]
        print(f"  {label:24s} n {len(rows):2d} one class {sum(f for _, f in rows):2d}  median "
              f"{statistics.median(d for d, _ in rows):+.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
