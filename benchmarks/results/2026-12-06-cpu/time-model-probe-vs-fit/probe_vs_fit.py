"""Per config: the plan's probe (random uint8 data), the probe on real crops, fit's epoch, fit with flush-denormal."""
import json, sys, time
import optuna, torch
from search.plan import device_probe as dp
from seg.config import Config
from seg.loaders import resolve_dataset
from seg.train import fit

storage, name, nums = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
study = optuna.load_study(study_name=name, storage=storage)
cfgs = {}
for n in nums:
    raw = study.trials[n].user_attrs["config"]
    cfgs[n] = Config.from_dict(json.loads(raw) if isinstance(raw, str) else raw).replace(train={"epochs": 1, "device": "cpu"})
data = resolve_dataset(cfgs[nums[0]].data)
ntrain = len(data.train.images)
real_randint = torch.randint

def real_crops(hw, batch):
    imgs, msks = [], []
    for i in range(batch):
        im, m = data.train.images[i], data.train.masks[i]
        imgs.append(im[:, :hw[0], :hw[1]]); msks.append(m[:hw[0], :hw[1]])
    return torch.stack(imgs).contiguous(), torch.stack(msks).contiguous()

for n, cfg in cfgs.items():
    hw = (cfg.transforms.crop_size,) * 2; b = cfg.train.batch_size
    out = {}
    out["probe"] = dp._measure(cfg, hw, torch.device("cpu"))[0]
    ims, ms = real_crops(hw, b)
    def fake_randint(low, high, size, **kw):
        if len(size) == 4: return ims.clone()
        if len(size) == 3: return ms.clone()
        return real_randint(low, high, size, **kw)
    torch.randint = fake_randint
    try:
        out["probe_real"] = dp._measure(cfg, hw, torch.device("cpu"))[0]
    finally:
        torch.randint = real_randint
    rec = fit(cfg, data).history[0]; out["fit"] = rec.train_seconds / (ntrain // b * b)
    torch.set_flush_denormal(True)
    rec = fit(cfg, data).history[0]; out["fit_ftz"] = rec.train_seconds / (ntrain // b * b)
    torch.set_flush_denormal(False)
    m = cfg.model
    print(f"trial {n} d{m.depth} b{m.base_channels} {m.upsample} {cfg.train.loss} {cfg.train.optimizer}: " +
          " ".join(f"{k} {v*1000:.2f}" for k, v in out.items()) + f" ms/img; fit/probe {out['fit']/out['probe']:.2f}", flush=True)
