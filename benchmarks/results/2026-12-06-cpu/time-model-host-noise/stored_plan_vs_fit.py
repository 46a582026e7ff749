"""A stored planned study's trial configurations: the plan's predicted training and validation seconds
against `fit`'s measured ones, epoch by epoch.

    python stored_plan_vs_fit.py STORAGE STUDY TRIALS(0,7) EPOCHS
"""

import sys

from stored_trial import predicted, stored_model, trial_config

from seg.loaders import resolve_dataset
from seg.train import fit

storage, study, numbers, epochs = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3].split(",")], int(sys.argv[4])
model = stored_model(storage, study)
for n in numbers:
    cfg = trial_config(storage, study, n, epochs)
    data = resolve_dataset(cfg.data)
    train_s, val_s, _, _ = predicted(model, cfg, data)
    for r in fit(cfg, data).history:
        val = r.seconds - r.train_seconds
        print(f"trial {n} epoch {r.epoch}: training {r.train_seconds:.2f} s (x{r.train_seconds / train_s:.2f}), "
              f"validation {val:.2f} s (x{val / val_s:.2f}), epoch x{r.seconds / (train_s + val_s + 0.15):.2f}",
              flush=True)
