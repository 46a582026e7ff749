"""One plan probe (depth 4, base 8, 128 px, batch 8) beside 0, 1 and 2 spinning processes: ms a sample,
the probe's CPU share, and the cores the other processes took (psutil's system-wide times less ours).

    python busy_probe.py
"""
import subprocess
import sys
import time

import psutil

from search.plan.device_probe import StepCost, device_spec
from seg.config import Config


def busy(t) -> float:
    return t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def main() -> None:
    cfg = Config().replace(model={"depth": 4, "base_channels": 8, "max_channels": 64},
                           train={"batch_size": 8, "device": "cpu"})
    for load in (0, 1, 2):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        time.sleep(0.5)
        cost = StepCost(device_spec("cpu"))
        sys0, own0, wall0 = psutil.cpu_times(), time.process_time(), time.perf_counter()
        seconds = cost.seconds_per_image(cfg, (128, 128))
        sys1, own1, wall1 = psutil.cpu_times(), time.process_time(), time.perf_counter()
        others = (busy(sys1) - busy(sys0) - (own1 - own0)) / (wall1 - wall0)
        print(f"load {load}: {seconds * 1000:.2f} ms/img, cpu_share {cost.cpu_share():.2f}, "
              f"other processes' cores {others:.2f}", flush=True)
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
