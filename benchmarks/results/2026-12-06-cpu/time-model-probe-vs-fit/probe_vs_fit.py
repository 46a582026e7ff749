"""Per stored trial configuration: the plan's probe (random uint8 data), the probe on real crops, one
epoch of `fit`, and one with flush-denormal; ms a training sample each.

    python probe_vs_fit.py STORAGE STUDY TRIALS   (TRIALS: comma-separated trial numbers)
"""
import json
import sys

import optuna
import torch

from search.plan import device_probe
from seg.config import Config
from seg.loaders import resolve_dataset
from seg.train import fit


def config_of(study: optuna.Study, number: int) -> Config:
    raw = study.trials[number].user_attrs["config"]
    cfg = Config.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
    return cfg.replace(train={"epochs": 1, "device": "cpu"})


def probe_on(images: torch.Tensor, masks: torch.Tensor, cfg: Config, hw: tuple[int, int]) -> float:
    """The plan's probe with its random images and masks replaced by these (B, 3, H, W) and (B, H, W)."""
    real_randint = torch.randint

    def fake_randint(low, high, size, **kw):
        if len(size) == 4:
            return images.clone()
        return masks.clone() if len(size) == 3 else real_randint(low, high, size, **kw)

    torch.randint = fake_randint
    try:
        return device_probe._measure(cfg, hw, torch.device("cpu"))[0]
    finally:
        torch.randint = real_randint


def main() -> None:
    storage, name, nums = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
    study = optuna.load_study(study_name=name, storage=storage)
    cfgs = {n: config_of(study, n) for n in nums}
    data = resolve_dataset(cfgs[nums[0]].data)
    for n, cfg in cfgs.items():
        hw, b = (cfg.transforms.crop_size,) * 2, cfg.train.batch_size
        per_sample = len(data.train.images) // b * b
        images = torch.stack([im[:, :hw[0], :hw[1]] for im in data.train.images[:b]]).contiguous()
        masks = torch.stack([m[:hw[0], :hw[1]] for m in data.train.masks[:b]]).contiguous()
        out = {"probe": device_probe._measure(cfg, hw, torch.device("cpu"))[0],
               "probe_real": probe_on(images, masks, cfg, hw),
               "fit": fit(cfg, data).history[0].train_seconds / per_sample}
        torch.set_flush_denormal(True)
        out["fit_ftz"] = fit(cfg, data).history[0].train_seconds / per_sample
        torch.set_flush_denormal(False)
        m = cfg.model
        figures = " ".join(f"{k} {v * 1000:.2f}" for k, v in out.items())
        print(f"trial {n} d{m.depth} b{m.base_channels} {m.upsample} {cfg.train.loss} {cfg.train.optimizer}: "
              f"{figures} ms/img; fit/probe {out['fit'] / out['probe']:.2f}", flush=True)


if __name__ == "__main__":
    main()
