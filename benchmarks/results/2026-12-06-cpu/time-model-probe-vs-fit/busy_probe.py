"""Does StepCost.cpu_share see one competing single-thread process? And does psutil's system-wide view?"""
import subprocess, sys, time
import psutil, torch
from search.plan.device_probe import StepCost, device_spec
from seg.config import Config, ModelConfig

cfg = Config().replace(model={"depth": 4, "base_channels": 8, "max_channels": 64},
                       train={"batch_size": 8, "device": "cpu"})
for load in (0, 1, 2):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    time.sleep(0.5)
    cost = StepCost(device_spec("cpu"))
    sys0, own0, w0 = psutil.cpu_times(), time.process_time(), time.perf_counter()
    s = cost.seconds_per_image(cfg, (128, 128))
    sys1, own1, w1 = psutil.cpu_times(), time.process_time(), time.perf_counter()
    busy = lambda t: t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
    others = (busy(sys1) - busy(sys0) - (own1 - own0)) / (w1 - w0)
    print(f"load {load}: {s*1000:.2f} ms/img, cpu_share {cost.cpu_share():.2f}, other processes' cores {others:.2f}", flush=True)
    for p in procs: p.kill()
