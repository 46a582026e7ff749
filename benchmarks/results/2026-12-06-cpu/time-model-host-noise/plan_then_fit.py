"""Plan the folder now (`search.plan`), then at once train stored trial configurations with `fit`: the
new plan's prediction against the epochs that follow it.

    python plan_then_fit.py DATA STORAGE STUDY TRIALS(0,7) EPOCHS OUT.toml
"""

import subprocess
import sys
import time

import tomllib
from stored_trial import print_fit_against, trial_config

from search.plan.epoch_time import EpochTimeModel
from seg.loaders import resolve_dataset

folder, storage, study = sys.argv[1], sys.argv[2], sys.argv[3]
numbers, epochs, out = [int(n) for n in sys.argv[4].split(",")], int(sys.argv[5]), sys.argv[6]
start = time.perf_counter()
subprocess.run([sys.executable, "-m", "search.plan", "--data", folder, "--hours", "0.5", "--out", out], check=True,
               stdout=subprocess.DEVNULL)
print(f"plan {time.perf_counter() - start:.0f} s", flush=True)
with open(out, "rb") as f:
    model = EpochTimeModel.from_dict(tomllib.load(f)["plan"]["time_model"])
for n in numbers:
    cfg = trial_config(storage, study, n, epochs)
    data = resolve_dataset(cfg.data)
    print_fit_against(model, n, cfg, data)
