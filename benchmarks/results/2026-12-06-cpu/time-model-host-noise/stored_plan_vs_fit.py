"""A stored planned study's trial configurations: the plan's predicted training and validation seconds
against `fit`'s measured ones, epoch by epoch.

    python stored_plan_vs_fit.py STORAGE STUDY TRIALS(0,7) EPOCHS
"""

import sys

from stored_trial import print_fit_against, stored_model, trial_config

from seg.loaders import resolve_dataset

storage, study, numbers, epochs = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3].split(",")], int(sys.argv[4])
model = stored_model(storage, study)
for n in numbers:
    cfg = trial_config(storage, study, n, epochs)
    data = resolve_dataset(cfg.data)
    print_fit_against(model, n, cfg, data)
