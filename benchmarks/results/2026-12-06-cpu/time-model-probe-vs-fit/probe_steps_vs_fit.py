"""One stored trial configuration, ROUNDS times: the plan's probe (40 timed steps kept), then one epoch of
`fit` on the decoded data; ms a training sample.

    python probe_steps_vs_fit.py STORAGE STUDY TRIAL ROUNDS
"""
import json
import statistics
import sys
import time

import optuna
import torch

from search.plan import device_probe
from seg.config import Config
from seg.loaders import resolve_dataset
from seg.train import fit

captured: list[list[float]] = []


def forty_steps(fn, device, timed_s=device_probe.MIN_TIMED_S) -> list[float]:
    """`device_probe._timed` with 40 steps always, kept for the median, mean and p90."""
    fn()
    times = []
    for _ in range(40):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    captured.append(times)
    return times


def main() -> None:
    storage, name, num, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    study = optuna.load_study(study_name=name, storage=storage)
    raw = study.trials[num].user_attrs["config"]
    cfg = Config.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
    cfg = cfg.replace(train={"epochs": 1, "device": "cpu"})
    data = resolve_dataset(cfg.data)
    hw, b = (cfg.transforms.crop_size,) * 2, cfg.train.batch_size
    samples = len(data.train.images) // b * b
    device_probe._timed = forty_steps
    for r in range(rounds):
        captured.clear()
        device_probe._measure(cfg, hw, torch.device("cpu"))
        steps = [t / b * 1000 for t in captured[0]]  # ms a sample
        rec = fit(cfg, data).history[0]
        per = rec.train_seconds / samples * 1000
        print(f"round {r}: probe median {statistics.median(steps):.2f} mean {statistics.fmean(steps):.2f} "
              f"p90 {sorted(steps)[int(0.9 * len(steps))]:.2f} ms/img | fit train {rec.train_seconds:.2f} s = "
              f"{per:.2f} ms/img (data {rec.data_seconds:.2f} s), val {rec.seconds - rec.train_seconds:.2f} s | "
              f"fit/probe median {per / statistics.median(steps):.2f}", flush=True)


if __name__ == "__main__":
    main()
