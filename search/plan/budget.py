"""Budget rule: `max_epochs`, the trial count, the pruner and the sampler from `--hours` (or
`--total-epochs`) and the measured seconds of an epoch.

- Pruner: Hyperband when trials are long (max_epochs >= HYPERBAND_FROM), the percentile pruner
  otherwise; neither ever cuts a trial after its first epoch (Hyperband's first rung is at epoch
  MIN_RESOURCE, the percentile pruner warms up for WARMUP_STEPS reported epochs): a trial's value
  after epoch 1 ranks its final value poorly (rank correlation 0.55 on the default study,
  docs/performance.md).
- The percentile setting is the one measured that waits for epoch 2: keep the top 30 %, from 2
  completed trials (chosen by replaying recorded curves to keep the best start-up trial on every
  seed; 4.02x fewer epochs on the default study, benchmarks/results/2026-11-24-cpu/RESULTS.md).
- Epochs a trial is expected to train under each pruner come from those pruning runs (percentile
  30 from epoch 2: 4.02x fewer epochs, one seed; Hyperband 2.08x, four seeds).
- max_epochs: the longest of EPOCH_LADDER that still leaves MIN_TRIALS trials; trials: what the
  budget then holds, at most MAX_TRIALS.
- The final training's share of a time budget (`final_share`): half of a long budget, up to 0.8 of a
  short one, by the epochs the whole budget trains of the typical configuration. On real photos at 30
  minutes of a 2-core CPU (107-269 such epochs), the final model's half budget cost 0.026-0.031 test
  mIoU against the same configuration trained the whole budget, more than any configuration the short
  trials found gained (-0.031 to +0.019; benchmarks/results/2026-12-06-cpu/realdata-gap/). A budget
  of 600 epochs or more keeps half, as before: nothing was measured there.
- The final training's margin (`SHORT_TRIAL_MARGIN`, trials shorter than HYPERBAND_FROM epochs): a
  trial replaces the [baseline] in the final training only by leading its value by more than the
  scatter of one configuration's short-trial value over training seeds (sd 0.049 over 6 seeds at 12
  epochs on CamVid, benchmarks/results/2026-12-05-cpu/camvid-trial-noise/). The best of several
  such values is the luckiest one, and the [baseline] is the configuration known to train well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search.plan.decisions import Decision

EPOCH_LADDER = (4, 6, 8, 12, 16, 24, 32, 50, 100)
HYPERBAND_FROM = 20
MIN_TRIALS, MAX_TRIALS = 25, 100
MIN_RESOURCE = 2
WARMUP_STEPS = 2  # Optuna's steps are epochs done (1-based) and it prunes only from step >= n_warmup_steps
PERCENTILE = {"name": "percentile", "percentile": 30.0, "n_startup_trials": 2, "n_warmup_steps": WARMUP_STEPS}
HYPERBAND = {"name": "hyperband", "min_resource": MIN_RESOURCE, "reduction_factor": 3}
FEWER_EPOCHS = {"percentile": 4.02, "hyperband": 2.08}
# The share of a long time budget kept for the final training of the search's best configuration;
# the models are sized for the rest of a budget split this way, whatever share a short budget keeps.
FINAL_SHARE = 0.5
SHORT_FINAL_SHARE = 0.8  # the share of a budget that trains SHORT_EPOCHS or fewer epochs
# The real-photo runs that measured the half share's cost trained 107-269 epochs in their budgets; from
# about twice that on, half is kept as before (not measured there).
SHORT_EPOCHS, LONG_EPOCHS = 300, 600
SHORT_TRIAL_MARGIN = 0.05  # val mIoU; about one sd of a short trial's value over training seeds
TRIAL_OVERHEAD_S = 2.0  # run start, checkpoint, figures and model of a trial on top of its epochs


@dataclass(frozen=True)
class Budget:
    max_epochs: int
    trials: int
    pruner: dict
    decisions: tuple[Decision, ...]
    warnings: tuple[str, ...] = ()


def pruner_for(max_epochs: int) -> dict:
    return dict(HYPERBAND if max_epochs >= HYPERBAND_FROM else PERCENTILE)


def expected_epochs(max_epochs: int) -> float:
    """Epochs a trial trains on average under the planned pruner."""
    pruner = pruner_for(max_epochs)["name"]
    if pruner == "hyperband":
        return max(MIN_RESOURCE, max_epochs / FEWER_EPOCHS[pruner])
    return min(max_epochs, WARMUP_STEPS + (max_epochs - WARMUP_STEPS) / FEWER_EPOCHS[pruner])


def final_share(budget_epochs: float) -> float:
    """The share of a time budget kept for the final training, when the whole budget would train
    `budget_epochs` epochs of one configuration: SHORT_FINAL_SHARE up to SHORT_EPOCHS, FINAL_SHARE from
    LONG_EPOCHS, straight between. A short budget's search cannot pay for half of it (module docstring)."""
    short = min(1.0, max(0.0, (LONG_EPOCHS - budget_epochs) / (LONG_EPOCHS - SHORT_EPOCHS)))
    return round(FINAL_SHARE + short * (SHORT_FINAL_SHARE - FINAL_SHARE), 2)


def plan_budget(epoch_s: float, epoch_why: str, seconds: float | None = None,
                total_epochs: int | None = None) -> Budget:
    """From a time budget (`seconds`) or an epoch budget (`total_epochs`), one of them. A time budget
    keeps `final_share` of itself for the final training of the search's best configuration ([confirm])."""
    if (seconds is None) == (total_epochs is None):
        raise ValueError("give the budget as seconds or as total epochs, one of them")
    share = 0.0 if seconds is None else final_share(seconds / epoch_s)
    whole, seconds = seconds, None if seconds is None else seconds * (1 - share)

    def trials_for(max_epochs: int) -> int:
        if total_epochs is not None:
            return math.floor(total_epochs / expected_epochs(max_epochs))
        return math.floor(seconds / (expected_epochs(max_epochs) * epoch_s + TRIAL_OVERHEAD_S))

    fitting = [e for e in EPOCH_LADDER if trials_for(e) >= MIN_TRIALS]
    max_epochs = fitting[-1] if fitting else EPOCH_LADDER[0]
    trials = max(1, min(MAX_TRIALS, trials_for(max_epochs)))
    warnings = () if fitting else (f"the budget holds only {trials} trial(s) of up to {max_epochs} epochs "
                                   f"(fewer than {MIN_TRIALS}); give more --hours or --total-epochs",)
    pruner = pruner_for(max_epochs)
    per_trial = expected_epochs(max_epochs)
    given = f"--total-epochs {total_epochs}" if total_epochs is not None else \
        f"{seconds / 3600:.3g} h of search (the budget less its [confirm] share)"
    cost = f"{per_trial:.1f} epochs a trial expected under {pruner['name']} pruning; {epoch_why}"
    decisions = [
        Decision("budget", "trials", trials, f"{given} / ({cost})"),
        Decision("budget", "max_epochs", max_epochs,
                 f"the longest trials (of {list(EPOCH_LADDER)}) that leave >= {MIN_TRIALS} trials"),
        Decision("budget", "timeout_s", round(whole) if whole else 0,
                 f"--hours: the whole budget; no trial starts after {1 - share:g} of it" if whole
                 else "--total-epochs: no time limit"),
        *([Decision("budget", "total_epochs", total_epochs,
                    "--total-epochs: the search stops once its trials have trained this many epochs in all")]
          if total_epochs is not None else []),
        Decision("sampler", "name", "tpe", "multivariate TPE handles the conditional parameters"),
        Decision("sampler", "n_startup_trials", max(2, min(10, trials // 3)),
                 "random trials first: a third, at most 10"),
        *_pruner_decisions(pruner, max_epochs),
        *(_final_training(share, whole / epoch_s, max_epochs) if whole else []),
    ]
    return Budget(max_epochs, trials, pruner, tuple(decisions), warnings)


def _final_training(share: float, budget_epochs: float, max_epochs: int) -> list[Decision]:
    length = (f"the whole budget trains about {budget_epochs:.0f} epochs of the typical configuration, so "
              + ("a long training: half is kept" if share == FINAL_SHARE else
                 f"it keeps more than half (half from {LONG_EPOCHS} epochs, {SHORT_FINAL_SHARE:g} up to "
                 f"{SHORT_EPOCHS}): on a short budget the final model's lost epochs cost more test mIoU "
                 "than the short trials' choice of configuration gained"))
    why = (f"{share:g} of the time budget trains the search's best configuration once more, for as many "
           "epochs as fit: short trials rank configurations, the final model needs the long training that a "
           f"single configuration given the whole budget gets; {length} (docs/performance.md)")
    return [Decision("confirm", "top", 1, "retrain the search's best configuration after the search"),
            Decision("confirm", "seeds", 1, "one final model: the budget buys length, not a mean over seeds"),
            Decision("confirm", "share", share, why),
            *([Decision("confirm", "margin", SHORT_TRIAL_MARGIN,
                        f"trials of {max_epochs} < {HYPERBAND_FROM} epochs: one configuration's short-trial value "
                        "moves with its training seed (sd 0.049 at 12 epochs on CamVid) and the best of several "
                        "is the luckiest, so a trial replaces the [baseline] in the final training only by "
                        f"leading it by more than {SHORT_TRIAL_MARGIN:g} (docs/performance.md)")]
              if max_epochs < HYPERBAND_FROM else [])]


def _pruner_decisions(pruner: dict, max_epochs: int) -> list[Decision]:
    if pruner["name"] == "hyperband":
        why = (f"trials of {max_epochs} >= {HYPERBAND_FROM} epochs: Hyperband (2.08x fewer epochs, best within "
               "0.01 of no pruning on the default study, docs/performance.md)")
        return [Decision("pruner", "name", "hyperband", why),
                Decision("pruner", "min_resource", MIN_RESOURCE, "the first cut comes after epoch 2, never epoch 1"),
                Decision("pruner", "reduction_factor", HYPERBAND["reduction_factor"], "Optuna's default")]
    why = (f"trials of {max_epochs} < {HYPERBAND_FROM} epochs: the percentile pruner (this setting trained 4.02x "
           "fewer epochs on the default study, benchmarks/results/2026-11-24-cpu/RESULTS.md)")
    return [Decision("pruner", "name", "percentile", why),
            Decision("pruner", "percentile", PERCENTILE["percentile"], "keep a trial in the top 30 % at its epoch"),
            Decision("pruner", "n_startup_trials", PERCENTILE["n_startup_trials"],
                     "cuts start once 2 trials completed"),
            Decision("pruner", "n_warmup_steps", WARMUP_STEPS, "the first cut comes after epoch 2, never epoch 1")]
