"""The device a plan is for, and what a configuration costs on it.

- On a device that is here (the CPU, or a CUDA device that is present): seconds per training sample,
  measured with real training steps at the configuration's batch size as `fit` runs them (the
  batched augmentations on uint8 data, normalisation, the loss, the step): a warm-up step, then the
  median of two to five (more while steps are short); and seconds per validated megapixel, timed
  the same way with an eval forward, the loss and the confusion matrix. The median, not the
  fastest: the fastest step predicted 15 s an epoch where trials took 21-31 s (issue 24). Two
  seconds of steps, not half a second: on CamVid at a 10-minute budget the half-second probes read
  1.4-1.7x slower than the trials then ran (measured / predicted 0.63-0.72), and the plan traded
  more resolution than it needed; with two seconds the same run read 0.86-1.00.
- For a CUDA device that is not here (`--device cuda --memory-gb G` on a CPU machine): the seconds
  are estimated from the model's FLOPs at an assumed throughput, and said to be.
- Memory: `seg.memory`'s estimate of one training step (under AMP on CUDA), no probe needed.
- A busy CPU: `search.plan.busy_cpu` judges each probe's CPU share; one that ran beside another
  process is timed again (`StepCost._timed_quietly`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from search.plan.busy_cpu import BUSY_SHARE, cpu_share
from search.plan.decisions import PlanError
from search.plan.epoch_time import (
    EPOCH_FIXED_S,
    PROBED_UPSAMPLE,
    EpochTimeModel,
    Probe,
    channel_block,
    gflops_per_mpixel,
    model_gflops,
    upsample_factors,
)
from seg.batch_augment import BatchAugment
from seg.config import Config, TransformConfig
from seg.data import IGNORE_INDEX
from seg.loaders import trained_samples
from seg.losses import build_loss
from seg.memory import GiB, estimate_training_memory, memory_limit, release_device_memory
from seg.metrics import ConfusionMatrix
from seg.model import build_unet, forward_flops
from seg.optim import build_optimizer
from seg.runtime import precision_for, resolve_device, uses_channels_last
from seg.train import train_step
from seg.transforms import Normalize

# Effective training throughput assumed for a CUDA device that is not here to measure (bf16 on a
# data-centre GPU reaches several times this; a plan from it is a starting point, not a measurement).
ASSUMED_CUDA_FLOPS = 50e12
STEP_FORWARDS = 3  # a training step costs about three forward passes (forward, then two for backward)
MIN_STEPS, MAX_STEPS, MIN_TIMED_S = 3, 20, 2.0  # timed probe steps: at least 3, up to 20 until 2 s are timed
PROBE_BUDGET_SHARE = 300  # a probe times at most 1/300 of the budget planned for (some 20 probes: under 7 %)
BUSY_RETIMES = 2  # a probe that ran beside another process is timed up to this many times more (`_timed_quietly`)


@dataclass(frozen=True)
class DeviceSpec:
    """What the plan is for: 'cpu' or 'cuda', whether it is here, and (CUDA) its memory."""

    kind: str
    present: bool
    label: str
    memory: int | None = None  # bytes the training step may use (CUDA)
    memory_why: str = ""


def device_spec(device: str, memory_gb: float | None = None) -> DeviceSpec:
    """`--device auto|cpu|cuda` and `--memory-gb`: the device to plan for."""
    if device not in ("auto", "cpu", "cuda"):
        raise PlanError(f"--device {device!r}; expected auto, cpu or cuda")
    if memory_gb is not None and not memory_gb > 0:
        raise PlanError(f"--memory-gb {memory_gb}: expected a positive number of GB")
    present = torch.cuda.is_available()
    kind = ("cuda" if present else "cpu") if device == "auto" else device
    if kind == "cpu":
        return DeviceSpec("cpu", True, f"cpu ({torch.get_num_threads()} threads)")
    if memory_gb is not None:
        label = torch.cuda.get_device_name(0) if present else "a CUDA device that is not here"
        return DeviceSpec("cuda", present, label, int(memory_gb * GiB), f"--memory-gb {memory_gb:g}")
    if not present:
        raise PlanError("--device cuda: no CUDA device is present here; pass --memory-gb G to plan for one "
                        "with G GB of memory")
    free = memory_limit(torch.device("cuda"))
    return DeviceSpec("cuda", True, torch.cuda.get_device_name(0), free, f"{free / GiB:.1f} GiB free now")


class StepCost:
    """Seconds per training sample (data path, step and loss) and per validated megapixel of configurations
    on one device, and bytes per training step."""

    def __init__(self, spec: DeviceSpec, budget_s: float | None = None) -> None:
        self.spec = spec
        self.timed_s = probe_seconds(budget_s)
        self.measured: dict[Any, tuple[float, float]] = {}  # (model, batch, hw, loss) -> (train s/sample, eval s/Mpx)
        self.layouts: dict[Any, bool] = {}  # model -> whether its probe ran channels_last
        self.wall_s = self.cpu_s = 0.0  # the kept probes' wall seconds and this process's CPU seconds over them
        self.retimed = 0  # probes timed again because another process shared the CPU while they ran
        self.retime = spec.kind == "cpu"  # False once a probe stayed busy through every try

    @property
    def how(self) -> str:
        if self.spec.present:
            return f"measured on {self.spec.label}"
        return f"estimated from FLOPs at an assumed {ASSUMED_CUDA_FLOPS / 1e12:g} TFLOP/s ({self.spec.label})"

    @staticmethod
    def _key(cfg: Config, hw: tuple[int, int]) -> tuple[Any, ...]:
        """What a probe's cost depends on: the model, the batch, the input and the loss."""
        return cfg.model, cfg.train.batch_size, hw, cfg.train.loss

    def _costs(self, cfg: Config, hw: tuple[int, int]) -> tuple[float, float]:
        key = self._key(cfg, hw)
        if key not in self.measured:
            if self.spec.present:
                self.record(cfg, hw, *self._timed_quietly(cfg, hw))
            else:
                forward = forward_flops(cfg.model, *hw)
                self.record(cfg, hw, STEP_FORWARDS * forward / ASSUMED_CUDA_FLOPS,
                            forward / ASSUMED_CUDA_FLOPS / (hw[0] * hw[1] / 1e6))
        return self.measured[key]

    def _timed_quietly(self, cfg: Config, hw: tuple[int, int]) -> tuple[float, float]:
        """One probe's (training s per sample, validation s per Mpx), timed again (up to BUSY_RETIMES more
        times) while another process takes part of the CPU, keeping the quietest try: another process
        only ever slows a probe, and one slowed probe skews the whole fit. A plan of CamVid timed while one
        single-threaded process decoded images beside it read five of its 15 probes 2.6-5.6x slow, fitted the
        bilinear and pixel-shuffle decoders at 2.2-2.6x the transposed one, and its trials of those then ran
        0.37-0.58x their prediction (2026-12-06). Once a probe stays busy through every try, the machine is
        busy for good (or a CPU quota holds this process to fewer cores): later probes are timed once."""
        tries = 1 + (BUSY_RETIMES if self.retime else 0)
        kept: tuple[float, float, tuple[float, float]] | None = None  # (wall s, CPU s, costs)
        timed = 0
        while timed < tries:
            timed += 1
            costs, wall, cpu = _measure_with_cpu(cfg, hw, resolve_device(self.spec.kind), self.timed_s)
            if kept is None or cpu_share(cpu, wall) > cpu_share(kept[1], kept[0]):
                kept = (wall, cpu, costs)
            if cpu_share(cpu, wall) >= BUSY_SHARE:
                break
        else:
            self.retime = False  # busy through every try: busy for good
        if timed > 1:
            self.retimed += 1
        wall, cpu, costs = kept
        self.wall_s += wall  # the kept try's seconds: the busy warning judges what the plan used
        self.cpu_s += cpu
        return costs

    def record(self, cfg: Config, hw: tuple[int, int], train_s: float, eval_s: float) -> None:
        """Keep one probe's (training seconds per sample, validation seconds per Mpx) of `cfg` at `hw`:
        measured here, or read back from a stored plan's `records()`."""
        self.layouts[cfg.model] = uses_channels_last(cfg, self.spec.kind)
        self.measured[self._key(cfg, hw)] = (train_s, eval_s)

    def seconds_per_image(self, cfg: Config, hw: tuple[int, int]) -> float:
        """One training sample: augmentation, normalisation, forward, loss, backward and optimizer step."""
        return self._costs(cfg, hw)[0]

    def eval_seconds_per_mpixel(self, cfg: Config, hw: tuple[int, int]) -> float:
        """One validated megapixel: forward, loss, argmax and confusion matrix."""
        return self._costs(cfg, hw)[1]

    def cpu_share(self) -> float | None:
        """The probes' CPU seconds over what their threads could have used (1.0: all of it); None when
        nothing was timed on a CPU."""
        if self.spec.kind != "cpu" or not self.wall_s:
            return None
        return cpu_share(self.cpu_s, self.wall_s)

    def training_bytes(self, cfg: Config, hw: tuple[int, int]) -> int:
        return estimate_training_memory(cfg, *hw, amp=self.spec.kind == "cuda").total

    def records(self) -> list[dict[str, Any]]:
        """The probes taken, for the plan's fingerprint."""
        return [{"depth": m.depth, "base_channels": m.base_channels, "max_channels": m.max_channels,
                 "upsample": m.upsample, "batch": b, "input": list(hw), "loss": loss,
                 "seconds_per_image": round(s, 6), "eval_seconds_per_mpixel": round(e, 6)}
                for (m, b, hw, loss), (s, e) in self.measured.items()]

    def time_model(self) -> EpochTimeModel:
        """The probes fitted as a model of any configuration's epoch (see `search.plan.epoch_time`): the
        transposed-convolution probes fitted, the other upsampling types as factors over that fit."""
        probes = [(m, self.layouts[m], *self._probes(m, hw, s, e)) for (m, _, hw, _), (s, e) in self.measured.items()]
        fitted = [p for p in probes if p[0].upsample == PROBED_UPSAMPLE]
        train, evals, layouts = [p[2] for p in fitted], [p[3] for p in fitted], [p[1] for p in fitted]
        line = EpochTimeModel.fit(self.spec.kind, train, evals, layouts)
        return EpochTimeModel.fit(self.spec.kind, train, evals, layouts, upsample_factors(line, probes))

    def _probes(self, m: Any, hw: tuple[int, int], train_s: float, eval_s: float) -> tuple[Probe, Probe]:
        """One measured configuration as a training probe (per sample) and a validation one (per Mpx)."""
        block = channel_block(self.spec.kind, self.layouts[m])
        return (Probe(model_gflops(m, *hw, block), hw[0] * hw[1] / 1e6, train_s),
                Probe(gflops_per_mpixel(m, block), 1.0, eval_s))


def _probe_transforms(hw: tuple[int, int]) -> TransformConfig:
    """The sampled augmentations at the middle of the planned ranges: every op runs, as in most trials."""
    mode = "random" if hw[0] == hw[1] else "none"
    return TransformConfig(crop_mode=mode, crop_size=max(8, hw[0]), hflip=0.5, rotation=7.5, color_jitter=0.1,
                           scale_min=0.9, scale_max=1.1)


def _measure(cfg: Config, hw: tuple[int, int], device: torch.device,
             timed_s: float = MIN_TIMED_S) -> tuple[float, float]:
    """(training seconds per sample, validation seconds per megapixel), timed as `fit` runs them: the
    batched data path (`seg.batch_augment`) on uint8 data, normalisation, the loss, the step; then an
    eval forward with the loss, the argmax and the confusion matrix."""
    prec = precision_for(cfg, device)
    model = build_unet(cfg.model).to(device, memory_format=prec.memory_format).train()
    opt = build_optimizer(model.parameters(), cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
    batch, k = cfg.train.batch_size, cfg.model.num_classes
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, *hw), dtype=torch.uint8, device=device)  # (B, 3, H, W)
    masks = torch.randint(0, k, (batch, *hw), dtype=torch.uint8, device=device)  # (B, H, W)
    sizes = torch.tensor([hw] * batch, device=device)  # (B, 2)
    augment = BatchAugment(_probe_transforms(hw), gen)
    norm = Normalize((0.5,) * 3, (0.25,) * 3).to(device)
    loss_fn = build_loss(cfg.train.loss, k, [masks[0].cpu()], device)

    def step() -> None:
        x, y = augment(images, masks, sizes)
        x = norm(x).contiguous(memory_format=prec.memory_format)
        loss = train_step(model, x, y.long(), opt, scaler, prec, loss_fn=loss_fn)
        bool(torch.isfinite(loss))  # fit checks every step on a CPU: one host sync, as there

    eval_batch = max(1, min(batch, cfg.train.eval_batch_size))
    x_eval = norm(images[:eval_batch]).contiguous(memory_format=prec.memory_format)
    y_eval = masks[:eval_batch].long()

    @torch.no_grad()
    def evaluate() -> None:
        cm = ConfusionMatrix(k, IGNORE_INDEX, device=device)
        with prec.autocast():
            logits = model(x_eval)  # (B, K, H, W)
        F.cross_entropy(logits.float(), y_eval, ignore_index=IGNORE_INDEX, reduction="sum")
        cm.update(y_eval, logits.argmax(1))

    try:
        train_times = _timed(step, device, timed_s)
        model.eval()
        eval_times = _timed(evaluate, device, timed_s)
    finally:
        model = opt = images = masks = x_eval = y_eval = None  # drop the references before freeing
        release_device_memory(device)
    # The median step, not the fastest: trials share the machine as the probe does, and pay for it.
    pixels = eval_batch * hw[0] * hw[1] / 1e6
    return statistics.median(train_times) / batch, statistics.median(eval_times) / pixels


def _measure_with_cpu(cfg: Config, hw: tuple[int, int], device: torch.device,
                      timed_s: float) -> tuple[tuple[float, float], float, float]:
    """`_measure`'s costs, its wall seconds, and this process's CPU seconds over them."""
    wall, cpu = time.perf_counter(), time.process_time()
    costs = _measure(cfg, hw, device, timed_s)
    return costs, time.perf_counter() - wall, time.process_time() - cpu


def probe_seconds(budget_s: float | None) -> float:
    """Seconds each probe times: MIN_TIMED_S, or less for a short budget (a 15 s plan must not spend it
    all on probes)."""
    return MIN_TIMED_S if budget_s is None else min(MIN_TIMED_S, budget_s / PROBE_BUDGET_SHARE)


def _timed(fn: Callable[[], None], device: torch.device, timed_s: float = MIN_TIMED_S) -> list[float]:
    """Seconds of calls of `fn` after an untimed first (it allocates and picks kernels): at least
    MIN_STEPS, up to MAX_STEPS until `timed_s` seconds are timed."""
    fn()
    times: list[float] = []
    while len(times) < MAX_STEPS and (len(times) < MIN_STEPS or sum(times) < timed_s):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(cost: StepCost, cfg: Config, input_hw: tuple[int, int], samples: int, val_pixels: float) -> float:
    """One epoch as `fit` runs it: the whole batches of `samples` training samples at `input_hw` (data
    path, step, loss), then validation of `val_pixels` pixels in all (whole images padded per batch, or
    tiles), then the epoch's fixed cost."""
    train = cost.seconds_per_image(cfg, input_hw) * trained_samples(samples, cfg.train.batch_size)
    val = cost.eval_seconds_per_mpixel(cfg, input_hw) * val_pixels / 1e6
    return train + val + EPOCH_FIXED_S
