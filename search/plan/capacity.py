"""Capacity rule: the widths and batch sizes of the space, bounded so the largest configuration fits.

Widths go up a ladder of base widths, each level doubling up to a cap, `min(max, base * 2**i)`. The
largest configuration of a rung is the deepest model with that base and its full doubling, trained
with Adam (the most optimizer state) and transposed convolutions (the most weights):

- on CUDA it must fit the device memory at the smallest batch: `seg.memory`'s estimate within
  MEMORY_SHARE of the free (or given) memory, since the batched data path may hold a quarter of
  it; then the batch sizes grow while the widest rung still fits;
- on the CPU it must fit the time: one epoch of it, measured with a probe step, at no more than
  1/CPU_EPOCHS_OF_LARGEST of the budget;
- widths have a floor, WIDTH_FLOOR (base 8 on the CPU, 16 on CUDA; issue 24 found base widths 2-4,
  planned for a 2-core CPU, far behind a fixed base-16 UNet at half resolution): when not even the
  floor's rung fits at full resolution, resolution goes first. The images are planned smaller,
  `data.scale` down the SCALES ladder (aspect kept, images and labels resized once at decode), and
  the crop, depth and validation pixels follow the smaller images; the plan's why says what was
  traded. Scaling stops before the images would be too small to crop (median short side under 64 px);
  then the crop steps down the crop ladder at that scale; a width below the floor is never planned.

The space then offers up to three base widths (the top one, 3/4 and 1/2 of it, none below the floor,
and on a CPU none that runs channels_last unless a multiple of 16: base 24 trains slower there than
base 32), two caps, and two or three batch sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from search.plan.decisions import Decision, PlanError
from search.plan.device_probe import DeviceSpec, StepCost, epoch_seconds
from search.plan.epoch_time import CPU_CHANNEL_BLOCK, validated_pixels
from search.plan.geometry import CROP_LADDER, Geometry, plan_geometry
from search.plan.survey import Survey
from seg.config import Config
from seg.memory import GiB
from seg.runtime import CPU_CHANNELS_LAST_MIN_WIDTH

BASE_LADDER = (4, 8, 16, 32, 64)
WIDTH_FLOOR = {"cpu": 8, "cuda": 16}  # never plan a base width below this
SCALES = (1.0, 0.75, 0.5, 0.375, 0.25)  # data.scale, tried in order while the floor does not fit
MIN_SCALED_SHORT = 2 * CROP_LADDER[0]  # no smaller scale once the median short side would be under this
MAX_WIDTH = 1024  # the report's widest level
CUDA_BATCHES = (8, 16, 32)
CPU_BATCHES = (8, 16)  # on a CPU an image costs about the same in any batch: the two the default study uses
MEMORY_SHARE = 0.7
CPU_EPOCHS_OF_LARGEST = 64
CPU_EPOCH_LIMIT_S = 60.0  # --total-epochs gives no time: an epoch of the largest config may take this long
# Optimizer steps an epoch that the batch leaves at least (`batch_cap`). The 19 training slices of the ISBI
# membranes at batch 8 are 2 steps an epoch: the baseline UNet read val mIoU 0.44-0.46 over 4 epochs, the
# score of a model that has learned nothing, where batch 2 (9 steps) read 0.37 -> 0.59 in the same 41-42 s
# (benchmarks/results/2026-12-06-cpu/small-batch-membranes/).
MIN_EPOCH_STEPS = 8


@dataclass(frozen=True)
class Sizing:
    """What every other rule needs from the data to cost a configuration."""

    num_classes: int
    samples: int  # training samples per epoch (five per image with five crops)
    val_images: int
    loss: str = "ce"  # the costliest loss the space may sample (the probes time it)


@dataclass(frozen=True)
class Capacity:
    geometry: Geometry  # the crop may have stepped down
    base_choices: tuple[int, ...]
    max_choices: tuple[int, ...]
    batch_choices: tuple[int, ...]
    decisions: tuple[Decision, ...]
    bound: float = 0.0  # bytes (CUDA) or epoch seconds (CPU) the largest config may cost
    costs: tuple[tuple[int, float], ...] = ()  # (base width, cost of its largest config) of the rungs tried
    traded: tuple[dict, ...] = ()  # the geometries that did not fit the floor, before this one
    floor: int = 1

    @property
    def scale(self) -> float:
        return self.geometry.scale


def top_width(base: int, depth: int) -> int:
    return min(MAX_WIDTH, base * 2 ** (depth - 1))


def probe_config(sizing: Sizing, depth: int, base: int, max_channels: int, batch: int, device: str) -> Config:
    return Config.from_dict({
        "model": {"num_classes": sizing.num_classes, "depth": depth, "base_channels": base,
                  "max_channels": max_channels, "upsample": "transpose", "norm": "batch"},
        "data": {"num_classes": sizing.num_classes},
        "train": {"batch_size": batch, "optimizer": "adam", "device": device, "loss": sizing.loss}})


def samples_of(geo: Geometry) -> int:
    """Training samples an epoch at this geometry (five per image with five crops)."""
    return len(geo.train_sizes) * (5 if geo.crop_mode == "five" else 1)


def val_pixels_of(geo: Geometry, cfg: Config) -> float:
    """Pixels validation runs through the model at this geometry (padded batches, or tiles)."""
    resize = {"resize": list(geo.resize)} if geo.resize else {}
    crop = {"crop_mode": geo.crop_mode, "crop_size": geo.crop_size or 64}
    return validated_pixels(cfg.replace(transforms={**resize, **crop}), geo.val_sizes)


def batch_cap(samples: int) -> int:
    """The largest power of two that still gives MIN_EPOCH_STEPS optimizer steps an epoch (at least 2:
    BatchNorm needs a pair). A small training set trains at a small batch: on a CPU an image costs about
    the same in any batch, and a short trial needs steps, not large batches."""
    cap = 2
    while cap * 2 * MIN_EPOCH_STEPS <= samples:
        cap *= 2
    return cap


def largest_cost(geo: Geometry, spec: DeviceSpec, cost: StepCost, sizing: Sizing, base: int, batch: int) -> float:
    """Bytes (CUDA) or epoch seconds (CPU) of the deepest, widest configuration of rung `base`."""
    depth = geo.depth_range[1]
    cfg = probe_config(sizing, depth, base, top_width(base, depth), batch, spec.kind)
    if spec.kind == "cuda":
        return cost.training_bytes(cfg, geo.input_hw)
    return epoch_seconds(cost, cfg, geo.input_hw, samples_of(geo), val_pixels_of(geo, cfg))


def _attempts(survey: Survey, full: Geometry, spec: DeviceSpec) -> Iterator[Geometry]:
    """Full resolution, then smaller `data.scale`s, then smaller crops at the smallest scale."""
    last = full
    yield full
    if full.crop_mode != "none":
        median_short = sorted(min(s) for s in survey.train_sizes)[len(survey.train_sizes) // 2]
        for scale in SCALES[1:]:
            if median_short * scale < MIN_SCALED_SHORT:
                break
            try:
                geo = plan_geometry(survey, scale)
            except PlanError:
                break
            if geo.crop_mode == "none":
                break
            last = geo
            yield geo
    for crop in last.smaller_crops():
        yield last.with_crop(crop, _why_smaller(last, crop, spec))


def plan_capacity(survey: Survey, spec: DeviceSpec, cost: StepCost, sizing: Sizing,
                  seconds: float | None, geo: Geometry | None = None) -> Capacity:
    """The widest rungs that fit, at the highest resolution where the width floor's rung fits."""
    geo = geo or plan_geometry(survey)
    batches = [b for b in (CUDA_BATCHES if spec.kind == "cuda" else CPU_BATCHES) if b <= batch_cap(sizing.samples)]
    batches = batches or [batch_cap(sizing.samples)]
    limit = (seconds / CPU_EPOCHS_OF_LARGEST) if seconds else CPU_EPOCH_LIMIT_S
    bound = MEMORY_SHARE * spec.memory if spec.kind == "cuda" else limit
    floor = WIDTH_FLOOR[spec.kind]
    ladder = [b for b in BASE_LADDER if b >= floor]
    traded: list[dict] = []
    for attempt in _attempts(survey, geo, spec):
        top, costs = None, []
        for base in ladder:  # ascending: stop at the first rung over the bound
            # A wider rung cannot cost less than a narrower one: a measured dip is another process's noise.
            least = costs[-1][1] if costs else 0.0
            costs.append((base, max(least, largest_cost(attempt, spec, cost, sizing, base, batches[0]))))
            if costs[-1][1] > bound:
                break
            top = base
        if top is None:
            traded.append({"scale": attempt.scale, "crop": attempt.crop_size, "input": list(attempt.input_hw),
                           "depth": attempt.depth_range[1], "floor_cost": costs[0][1]})
            continue
        depth = attempt.depth_range[1]
        if spec.kind == "cuda":
            batches = [b for b in batches if largest_cost(attempt, spec, cost, sizing, top, b) <= bound]
            used = largest_cost(attempt, spec, cost, sizing, top, batches[-1])
            fit = (f"largest config (depth {depth}, {top}->{top_width(top, depth)}, batch {batches[-1]}, adam) "
                   f"estimated {used / GiB:.1f} GiB <= {MEMORY_SHARE:.0%} of {spec.memory / GiB:.0f} GiB "
                   f"({spec.memory_why})")
        else:
            used = largest_cost(attempt, spec, cost, sizing, top, batches[0])
            fit = (f"an epoch of the largest config (depth {depth}, {top}->{top_width(top, depth)}) takes "
                   f"{used:.1f} s <= {limit:.1f} s ({_limit_text(seconds)}), {cost.how}")
        return replace(_capacity(attempt, depth, top, batches, fit, spec, floor), bound=bound, costs=tuple(costs),
                       traded=tuple(traded), floor=floor)
    smallest = attempt.input_hw
    raise PlanError(f"not even the narrowest UNet the width floor allows (base width {floor} on {spec.kind}) fits "
                    f"the {'memory' if spec.kind == 'cuda' else 'time'} of {spec.label}, down to data.scale "
                    f"{attempt.scale:g} and a {smallest[0]}x{smallest[1]} px training input: give more --memory-gb "
                    "or --hours")


def scale_decision(cap: Capacity, spec: DeviceSpec, seconds: float | None) -> Decision | None:
    """`data.scale` with what was traded and why, when the plan gave up resolution; else None."""
    if cap.scale == 1.0:
        return None
    unit = (lambda c: f"{c / GiB:.1f} GiB") if spec.kind == "cuda" else (lambda c: f"{c:.1f} s an epoch")
    bound = unit(cap.bound) + (f" ({MEMORY_SHARE:.0%} of the memory)" if spec.kind == "cuda"
                               else f" ({_limit_text(seconds)})")
    full = cap.traded[0] if cap.traded else None
    at_full = (f"at full resolution ({full['input'][0]}x{full['input'][1]} px crops, depth {full['depth']}) even "
               f"base width {cap.floor} costs {unit(full['floor_cost'])} > {bound}" if full else "")
    geo = cap.geometry
    return Decision("data", "scale", cap.scale,
                    f"resolution traded for width: {at_full}; widths are never planned below {cap.floor} on "
                    f"{spec.kind}, so images and labels are resized by {cap.scale:g} at decode (aspect kept), "
                    f"training on {geo.input_hw[0]}x{geo.input_hw[1]} px inputs with base widths up to "
                    f"{cap.base_choices[-1]}")


def _limit_text(seconds: float | None) -> str:
    if seconds:
        return f"1/{CPU_EPOCHS_OF_LARGEST} of the {seconds:.0f} s budget"
    return "the per-epoch limit without a time budget"


def _why_smaller(geo: Geometry, crop: int, spec: DeviceSpec) -> str:
    return (f"stepped down from {geo.crop_size} px ({geo.why_crop}): the narrowest UNet at that crop does not fit "
            f"{'the memory' if spec.kind == 'cuda' else 'the time'} of {spec.label}")


def _capacity(geo: Geometry, depth: int, top: int, batches: list[int], fit: str, spec: DeviceSpec,
              floor: int) -> Capacity:
    bases, dropped = _base_choices(top, floor, spec.kind)
    widest = top_width(top, depth)
    caps = tuple(sorted({c for c in (widest // 2, widest) if c >= bases[-1]}))
    batch_choices = tuple(batches[-3:] if spec.kind == "cuda" else batches[-2:])
    decisions = (
        Decision("space.model", "base_channels", _dim(bases), f"level i has min(max, base * 2**i) channels; never "
                                                              f"below {floor} on {spec.kind}; {fit}{dropped}"),
        Decision("space.model", "max_channels", _dim(caps), f"the widest level of depth {depth} from base {top}, "
                                                            "and half of it"),
        Decision("space.train", "batch_size", _dim(batch_choices),
                 ("bounded by the same largest config" if spec.kind == "cuda"
                  else "on a CPU the time per image barely depends on the batch")
                 + f"; >= {MIN_EPOCH_STEPS} steps an epoch"),
    )
    return Capacity(geo, bases, caps, batch_choices, decisions)


def _base_choices(top: int, floor: int, kind: str) -> tuple[tuple[int, ...], str]:
    """The top base width, 3/4 and 1/2 of it (none below the floor), and the why of any left out: on a
    CPU a width that runs channels_last but is not a multiple of CPU_CHANNEL_BLOCK costs more than the
    next multiple (base 24 more than base 32, `search.plan.epoch_time`), so it is not offered."""
    bases = sorted({max(floor, top // 2), max(floor, top * 3 // 4), top})
    if kind != "cpu":
        return tuple(bases), ""
    slow = [b for b in bases if b >= CPU_CHANNELS_LAST_MIN_WIDTH and b % CPU_CHANNEL_BLOCK]
    why = (f"; not {', '.join(map(str, slow))}: on a CPU a channels_last width that is not a multiple of "
           f"{CPU_CHANNEL_BLOCK} trains slower than the next multiple") if slow else ""
    return tuple(b for b in bases if b not in slow), why


def _dim(values: tuple[int, ...]) -> int | dict[str, list[int]]:
    return values[0] if len(values) == 1 else {"choices": list(values)}
