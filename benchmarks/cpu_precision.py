"""CPU training precision, side by side: fp32, bf16 autocast, and bf16 autocast + channels_last, each
training the same configurations with the same seeds; the default is bf16 where the CPU has it natively,
with channels_last when the narrowest level has 16 channels or more (seg.runtime.precision_for).

Run from the repository root:

    python -m benchmarks.cpu_precision --epochs 30 --seeds 1 2 3 --out benchmarks/results/<date>-cpu/cpu-precision
    python -m benchmarks.cpu_precision --tiny     # 1 epoch, one seed, the baseline only (CI)

Configurations: the default study's `[baseline]` (base width 16) and a second one (base width 12,
depth 4, pixel-shuffle upsampling, AdamW with one-cycle, batch 16) on the embedded dataset. Per
configuration and training seed the arms run one after another, so a busy machine slows them alike;
each reports seconds an epoch (training plus validation, the mean over the epochs) and val mIoU (final
and best). The arms differ only in `train.amp` and `train.channels_last`; the channels_last arm lifts
the width rule so that it runs channels_last at every width, and the table marks the arm the default
picks. On a CPU without native bf16 the bf16 arms are skipped (`fit` would run fp32 there). Writes
cpu-precision.json and cpu-precision.md to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

import seg.runtime
from benchmarks.machine import machine_info
from benchmarks.realdata import REPO
from search.study.definition import load_study
from search.study.space import RunOptions, build_config
from seg.config import Config
from seg.loaders import resolve_dataset
from seg.train import fit

# name -> (train.amp, train.channels_last)
ARMS: dict[str, tuple[bool, bool]] = {"fp32": (False, False), "bf16": (True, False),
                                      "bf16 + channels_last": (True, True)}
SECOND = {"model.depth": 4, "model.base_channels": 12, "model.max_channels": 64, "model.upsample": "pixelshuffle",
          "train.loss": "ce", "train.optimizer": "adamw", "train.lr": 2e-3, "train.weight_decay": 1e-4,
          "train.batch_size": 16, "train.scheduler": "onecycle", "transforms.scale_jitter": 0.1,
          "transforms.hflip": 0.5, "transforms.rotation": 10.0, "transforms.color_jitter": 0.1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30, help="epochs of every training (default 30)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds (default 1 2 3)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<date>-cpu/cpu-precision)")
    p.add_argument("--tiny", action="store_true", help="1 epoch, seed 0, the baseline only (CI)")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.seeds = 1, [0]
    if args.epochs < 1:
        p.error(f"--epochs {args.epochs}: expected 1 or more")
    return args


def configs(epochs: int, seed: int, tiny: bool) -> dict[str, Config]:
    """The configurations trained, by name, from the default study's fixed values."""
    sdef = load_study("default")
    fixed = {d.name: d.value for d in sdef.space if d.fixed}
    chosen = {"baseline": sdef.baseline} if tiny else {"baseline": sdef.baseline, "adamw-pixelshuffle": SECOND}
    return {name: build_config({**fixed, **params}, sdef, RunOptions(epochs=epochs, device="cpu", seed=seed), 0)
            for name, params in chosen.items()}


def default_arm(cfg: Config) -> str:
    """The arm `fit` runs by default for this configuration on this CPU."""
    prec = seg.runtime.precision_for(cfg, torch.device("cpu"))
    return {(False, False): "fp32", (True, False): "bf16", (True, True): "bf16 + channels_last",
            (False, True): "fp32 + channels_last"}[(prec.amp_dtype is not None, prec.channels_last)]


def train_arm(cfg: Config, amp: bool, channels_last: bool) -> dict[str, Any]:
    arm_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp, channels_last=channels_last))
    width_rule = seg.runtime.CPU_CHANNELS_LAST_MIN_WIDTH
    seg.runtime.CPU_CHANNELS_LAST_MIN_WIDTH = 0  # the arm says the layout, whatever the widths
    try:
        result = fit(arm_cfg, resolve_dataset(cfg.data))
    finally:
        seg.runtime.CPU_CHANNELS_LAST_MIN_WIDTH = width_rule
    history = result.history
    return {"epoch_s": statistics.fmean(r.seconds for r in history),
            "train_s": statistics.fmean(r.train_seconds for r in history),
            "final_miou": history[-1].val_miou, "best_miou": max(r.val_miou for r in history)}


def table(rows: list[dict[str, Any]], arms: list[str]) -> str:
    """Per configuration: each arm's median seconds an epoch, its speed-up over fp32, and val mIoU per seed."""
    lines = ["| configuration | arm | s/epoch (median) | speed-up over fp32 | final val mIoU per seed | median |",
             "|---|---|---:|---:|---|---:|"]
    defaults = {r["config"]: r["default"] for r in rows}
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        base = statistics.median(r["fp32"]["epoch_s"] for r in mine)
        for arm in arms:
            secs = statistics.median(r[arm]["epoch_s"] for r in mine)
            finals = [r[arm]["final_miou"] for r in mine]
            mark = " (the default)" if arm == defaults[name] else ""
            lines.append(f"| {name} | {arm}{mark} | {secs:.2f} | {base / secs:.2f}x | "
                         f"{', '.join(f'{v:.3f}' for v in finals)} | {statistics.median(finals):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or REPO / "benchmarks" / "results" / f"{dt.date.today()}-cpu" / "cpu-precision"
    out.mkdir(parents=True, exist_ok=True)
    arms = [a for a in ARMS if not ARMS[a][0] or seg.runtime.cpu_has_native_bf16()]
    skipped = {a: "this CPU has no native bf16 (AVX512-BF16 or AMX)" for a in ARMS if a not in arms}
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for name, cfg in configs(args.epochs, seed, args.tiny).items():
            row: dict[str, Any] = {"config": name, "seed": seed, "default": default_arm(cfg)}
            for arm in arms:
                row[arm] = train_arm(cfg, *ARMS[arm])
                print(json.dumps({"config": name, "seed": seed, "arm": arm, **row[arm]}), flush=True)
            rows.append(row)
    record = {"command": shlex.join(["python", "-m", "benchmarks.cpu_precision",
                                     *(sys.argv[1:] if argv is None else argv)]),
              "finished": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info("cpu"),
              "epochs": args.epochs, "seeds": args.seeds, "arms": arms, "skipped": skipped, "rows": rows}
    (out / "cpu-precision.json").write_text(json.dumps(record, indent=2) + "\n")
    md = table(rows, arms)
    (out / "cpu-precision.md").write_text(f"# CPU precision, {args.epochs} epochs\n\n- command: `{record['command']}`\n"
                                          + "".join(f"- skipped {a}: {why}\n" for a, why in skipped.items())
                                          + f"\n{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
