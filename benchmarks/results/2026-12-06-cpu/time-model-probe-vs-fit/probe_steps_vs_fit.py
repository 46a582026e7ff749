"""Probe steps (as the plan times them) vs the real training loop's steps, same config, interleaved."""
import json, statistics, sys, time
import optuna, torch
from search.plan import device_probe as dp
from seg.config import Config
from seg.loaders import resolve_dataset
from seg.train import fit

storage = sys.argv[1]; name = sys.argv[2]; num = int(sys.argv[3]); rounds = int(sys.argv[4])
study = optuna.load_study(study_name=name, storage=storage)
raw = study.trials[num].user_attrs["config"]
cfg = Config.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
cfg = cfg.replace(train={"epochs": 1, "device": "cpu"})
data = resolve_dataset(cfg.data)
hw = (cfg.transforms.crop_size, cfg.transforms.crop_size)
n = len(data.train.images)
print("threads", torch.get_num_threads(), "train", n, "crop", hw, "batch", cfg.train.batch_size, flush=True)

captured = []
orig = dp._timed
def timed(fn, device, timed_s=dp.MIN_TIMED_S):
    fn(); ts = []
    for _ in range(40):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    captured.append(ts); return ts
dp._timed = timed

for r in range(rounds):
    captured.clear()
    t0 = time.perf_counter()
    dp._measure(cfg, hw, torch.device("cpu"))
    probe_wall = time.perf_counter() - t0
    tr = captured[0]; b = cfg.train.batch_size
    res = fit(cfg, data)
    rec = res.history[0]
    steps = n // b
    print(f"round {r}: probe step median {statistics.median(tr)/b*1000:.2f} ms/img mean {statistics.fmean(tr)/b*1000:.2f} "
          f"p90 {sorted(tr)[int(.9*len(tr))]/b*1000:.2f} | fit train {rec.train_seconds:.2f} s = {rec.train_seconds/(steps*b)*1000:.2f} ms/img "
          f"(data {rec.data_seconds:.2f} s) val {rec.seconds-rec.train_seconds:.2f} s | ratio fit/probe-median "
          f"{rec.train_seconds/(steps*b)/(statistics.median(tr)/b):.2f} fit/probe-mean {rec.train_seconds/(steps*b)/(statistics.fmean(tr)/b):.2f}", flush=True)
