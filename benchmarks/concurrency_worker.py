"""One concurrency-benchmark worker: `python -m benchmarks.concurrency_worker CONFIG_JSON STEPS GO_FILE [THREADS]`.

Builds the model of CONFIG_JSON (a `Config.to_dict()`), runs two warm-up steps, prints `ready`,
waits for GO_FILE to exist (so all workers start timing together), runs STEPS training steps on a
fixed synthetic batch and prints one JSON line: images, start and end (time.time()).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from seg.config import Config
from seg.model import build_unet
from seg.optim import build_optimizer
from seg.runtime import precision_for, resolve_device
from seg.train import train_step

WAIT_LIMIT_S = 600.0


def wait_for(path: Path, limit_s: float = WAIT_LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker: {path} did not appear within {limit_s:.0f} s")
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    cfg = Config.from_dict(json.loads(argv[0]), source="worker config")
    steps, go = int(argv[1]), Path(argv[2])
    if len(argv) == 4:
        torch.set_num_threads(int(argv[3]))
    device = resolve_device(cfg.train.device)
    prec = precision_for(cfg, device)
    model = build_unet(cfg.model).to(device, memory_format=prec.memory_format).train()
    opt = build_optimizer(model.parameters(), cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
    b, s = cfg.train.batch_size, cfg.transforms.crop_size
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=prec.memory_format)  # (B, 3, S, S)
    y = torch.randint(0, cfg.model.num_classes, (b, s, s), device=device)
    for _ in range(2):
        train_step(model, x, y, opt, scaler, prec)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print("ready", flush=True)
    wait_for(go)
    start = time.time()
    for _ in range(steps):
        train_step(model, x, y, opt, scaler, prec)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(json.dumps({"images": steps * b, "start": start, "end": time.time()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
