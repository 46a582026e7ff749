"""The plan's probe of stored trial configurations now (`_measure`), against the stored plan's model per
sample and per megapixel, then one epoch of `fit`, in rounds.

    python probe_and_fit.py STORAGE STUDY TRIALS(0,7) ROUNDS
"""

import sys

import torch
from stored_trial import predicted, stored_model, trial_config

from search.plan import device_probe
from search.plan.epoch_forecast import data_sizes
from search.plan.epoch_time import training_shape
from seg.loaders import resolve_dataset
from seg.train import fit

storage, study, numbers, rounds = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3].split(",")], int(sys.argv[4])
model = stored_model(storage, study)
for n in numbers:
    cfg = trial_config(storage, study, n, 1)
    data = resolve_dataset(cfg.data)
    train_s, val_s, samples, pixels = predicted(model, cfg, data)
    per_sample, per_mpx = train_s / samples, val_s / (pixels / 1e6)
    hw = training_shape(cfg, data_sizes(data)[0])[0]
    for r in range(rounds):
        probe_s, probe_e = device_probe._measure(cfg, hw, torch.device("cpu"))
        rec = fit(cfg, data).history[0]
        fit_s, fit_e = rec.train_seconds / samples, (rec.seconds - rec.train_seconds) / (pixels / 1e6)
        print(f"trial {n} round {r}: probe {probe_s * 1e3:.2f} ms a sample (x{probe_s / per_sample:.2f} the model), "
              f"{probe_e:.3f} s/Mpx (x{probe_e / per_mpx:.2f}); fit {fit_s * 1e3:.2f} ms (x{fit_s / probe_s:.2f} the "
              f"probe), {fit_e:.3f} s/Mpx (x{fit_e / probe_e:.2f})", flush=True)
