"""After an idle pause, back-to-back probes (`_measure`, 2 s windows) of one stored configuration for a while:
how much one window's reading moves, and whether the first seconds after idling run faster.

    python probe_windows.py STORAGE STUDY TRIAL IDLE_S TOTAL_S
"""

import sys
import time

import torch
from stored_trial import trial_config

from search.plan import device_probe

storage, study, number = sys.argv[1], sys.argv[2], int(sys.argv[3])
idle, total = float(sys.argv[4]), float(sys.argv[5])
cfg = trial_config(storage, study, number, 1)
hw = (cfg.transforms.crop_size, cfg.transforms.crop_size)
time.sleep(idle)
start, readings = time.perf_counter(), []
while time.perf_counter() - start < total:
    per_sample, _ = device_probe._measure(cfg, hw, torch.device("cpu"))
    readings.append(f"{time.perf_counter() - start:.0f}s:{per_sample * 1e3:.1f}")
print(f"idle {idle:.0f} s, then probes (seconds since: ms a sample):", " ".join(readings), flush=True)
