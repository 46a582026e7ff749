"""Capacity rule: the widths and batch sizes of the space, bounded so the largest configuration fits.

Widths go up a ladder of base widths, each level doubling up to a cap, `min(max, base * 2**i)`. The
largest configuration of a rung is the deepest model with that base and its full doubling, trained
with Adam (the most optimizer state) and transposed convolutions (the most weights):

- on CUDA it must fit the device memory at the smallest batch: `seg.memory`'s estimate within
  MEMORY_SHARE of the free (or given) memory, since the batched data path may hold a quarter of
  it; then the batch sizes grow while the widest rung still fits;
- on the CPU it must fit the time: one epoch of it, measured with a probe step, at no more than
  1/CPU_EPOCHS_OF_LARGEST of the budget;
- if even the narrowest rung does not fit, the crop steps down the crop ladder.

The space then offers three base widths up to the top one, two caps, and two or three batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from search.plan.decisions import Decision, PlanError
from search.plan.device_probe import DeviceSpec, StepCost, epoch_seconds
from search.plan.geometry import Geometry
from seg.config import Config
from seg.memory import GiB

BASE_LADDER = (4, 8, 16, 32, 64)
MAX_WIDTH = 1024  # the report's widest level
CUDA_BATCHES = (8, 16, 32)
CPU_BATCHES = (8, 16)  # on a CPU an image costs about the same in any batch: the two the default study uses
MEMORY_SHARE = 0.7
CPU_EPOCHS_OF_LARGEST = 64
CPU_EPOCH_LIMIT_S = 60.0  # --total-epochs gives no time: an epoch of the largest config may take this long


@dataclass(frozen=True)
class Sizing:
    """What every other rule needs from the data to cost a configuration."""

    num_classes: int
    samples: int  # training samples per epoch (five per image with five crops)
    val_images: int


@dataclass(frozen=True)
class Capacity:
    geometry: Geometry  # the crop may have stepped down
    base_choices: tuple[int, ...]
    max_choices: tuple[int, ...]
    batch_choices: tuple[int, ...]
    decisions: tuple[Decision, ...]
    bound: float = 0.0  # bytes (CUDA) or epoch seconds (CPU) the largest config may cost
    costs: tuple[tuple[int, float], ...] = ()  # (base width, cost of its largest config) of the rungs tried


def top_width(base: int, depth: int) -> int:
    return min(MAX_WIDTH, base * 2 ** (depth - 1))


def probe_config(sizing: Sizing, depth: int, base: int, max_channels: int, batch: int, device: str) -> Config:
    return Config.from_dict({
        "model": {"num_classes": sizing.num_classes, "depth": depth, "base_channels": base,
                  "max_channels": max_channels, "upsample": "transpose", "norm": "batch"},
        "data": {"num_classes": sizing.num_classes},
        "train": {"batch_size": batch, "optimizer": "adam", "device": device}})


def batch_cap(samples: int) -> int:
    """The largest power of two that still gives two steps an epoch (at least 2: BatchNorm needs a pair)."""
    cap = 2
    while cap * 4 <= samples:
        cap *= 2
    return cap


def largest_cost(geo: Geometry, spec: DeviceSpec, cost: StepCost, sizing: Sizing, base: int, batch: int) -> float:
    """Bytes (CUDA) or epoch seconds (CPU) of the deepest, widest configuration of rung `base`."""
    depth = geo.depth_range[1]
    cfg = probe_config(sizing, depth, base, top_width(base, depth), batch, spec.kind)
    if spec.kind == "cuda":
        return cost.training_bytes(cfg, geo.input_hw)
    return epoch_seconds(cost, cfg, geo.input_hw, sizing.samples, sizing.val_images, geo.val_pixels)


def plan_capacity(geo: Geometry, spec: DeviceSpec, cost: StepCost, sizing: Sizing,
                  seconds: float | None) -> Capacity:
    batches = [b for b in (CUDA_BATCHES if spec.kind == "cuda" else CPU_BATCHES) if b <= batch_cap(sizing.samples)]
    batches = batches or [batch_cap(sizing.samples)]
    limit = (seconds / CPU_EPOCHS_OF_LARGEST) if seconds else CPU_EPOCH_LIMIT_S
    bound = MEMORY_SHARE * spec.memory if spec.kind == "cuda" else limit
    for attempt in [geo, *(geo.with_crop(c, _why_smaller(geo, c, spec)) for c in geo.smaller_crops())]:
        top, costs = None, []
        for base in BASE_LADDER:  # ascending: stop at the first rung over the bound
            # A wider rung cannot cost less than a narrower one: a measured dip is another process's noise.
            floor = costs[-1][1] if costs else 0.0
            costs.append((base, max(floor, largest_cost(attempt, spec, cost, sizing, base, batches[0]))))
            if costs[-1][1] > bound:
                break
            top = base
        if top is None:
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
        return replace(_capacity(attempt, depth, top, batches, fit, spec), bound=bound, costs=tuple(costs))
    smallest = attempt.input_hw
    raise PlanError(f"not even the narrowest UNet (base width {BASE_LADDER[0]}) fits the "
                    f"{'memory' if spec.kind == 'cuda' else 'time'} of {spec.label}, down to a "
                    f"{smallest[0]}x{smallest[1]} px training input: give more --memory-gb or --hours")


def _limit_text(seconds: float | None) -> str:
    if seconds:
        return f"1/{CPU_EPOCHS_OF_LARGEST} of the {seconds:.0f} s budget"
    return "the per-epoch limit without a time budget"


def _why_smaller(geo: Geometry, crop: int, spec: DeviceSpec) -> str:
    return (f"stepped down from {geo.crop_size} px ({geo.why_crop}): the narrowest UNet at that crop does not fit "
            f"{'the memory' if spec.kind == 'cuda' else 'the time'} of {spec.label}")


def _capacity(geo: Geometry, depth: int, top: int, batches: list[int], fit: str, spec: DeviceSpec) -> Capacity:
    bases = tuple(sorted({max(1, top // 2), max(1, top * 3 // 4), top}))
    widest = top_width(top, depth)
    caps = tuple(sorted({c for c in (widest // 2, widest) if c >= bases[-1]}))
    batch_choices = tuple(batches[-3:] if spec.kind == "cuda" else batches[-2:])
    decisions = (
        Decision("space.model", "base_channels", _dim(bases), f"level i has min(max, base * 2**i) channels; {fit}"),
        Decision("space.model", "max_channels", _dim(caps), f"the widest level of depth {depth} from base {top}, "
                                                            "and half of it"),
        Decision("space.train", "batch_size", _dim(batch_choices),
                 "bounded by the same largest config" if spec.kind == "cuda"
                 else "on a CPU the time per image barely depends on the batch; >= 2 steps an epoch"),
    )
    return Capacity(geo, bases, caps, batch_choices, decisions)


def _dim(values: tuple[int, ...]) -> int | dict[str, list[int]]:
    return values[0] if len(values) == 1 else {"choices": list(values)}
