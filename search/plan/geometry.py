"""Geometry rule: resize, crop mode and size, and the depth range, from the training images' sizes.

- Sizes that vary widely (the 95th percentile of the short sides over the 5th above 2) are resized
  to the median size, as the report resized to its mean size by hand, and trained on five crops.
- Otherwise small images (median short side under twice the smallest crop) train whole, and the
  rest on random crops.
- The crop is the largest of CROP_LADDER that every training image allows after the resize (a crop
  larger than some images was the report's crash).
- Depth: up to DEPTH_SPAN levels, ending at the deepest that keeps the bottleneck >= 8 px.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from search.plan.decisions import Decision, PlanError
from search.plan.survey import Survey

CROP_LADDER = (32, 48, 64, 96, 128, 192, 256, 384, 512)  # each a multiple of 2**(deepest depth - 1) it allows
MIN_BOTTLENECK_PX = 8
MIN_DEPTH, MAX_DEPTH, DEPTH_SPAN = 2, 8, 3
MIN_SIDE = MIN_BOTTLENECK_PX * 2 ** (MIN_DEPTH - 1)  # the smallest UNet (depth 2) needs 16 px
RESIZE_SPREAD = 2.0
RESIZE_MULTIPLE = 16


def deepest(side: int) -> int:
    """The largest depth whose bottleneck (side / 2**(depth - 1)) stays >= MIN_BOTTLENECK_PX."""
    depth = 1
    while depth < MAX_DEPTH and side // 2 ** depth >= MIN_BOTTLENECK_PX:
        depth += 1
    return depth


def _percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[round(q * (len(sorted_values) - 1))]


@dataclass(frozen=True)
class Geometry:
    """The planned preprocessing and the sizes the other rules cost it at."""

    resize: tuple[int, int] | None
    crop_mode: str  # "five", "random" or "none"
    crop_size: int | None  # None when whole images train
    input_hw: tuple[int, int]  # one training sample's size (for 'none': the largest image, batches pad to it)
    depth_side: int  # the side the bottleneck rule divides
    val_pixels: float  # mean pixels of a validation image as the model sees it
    why_resize: str
    why_mode: str
    why_crop: str = ""  # why this crop size (none when whole images train)

    @property
    def depth_range(self) -> tuple[int, int]:
        high = deepest(self.depth_side)
        return max(MIN_DEPTH, high - DEPTH_SPAN + 1), high

    def smaller_crops(self) -> list[int]:
        """The ladder's crops below this one, largest first (what capacity may fall back to)."""
        if self.crop_size is None:
            return []
        return [c for c in reversed(CROP_LADDER) if c < self.crop_size and deepest(c) >= MIN_DEPTH]

    def with_crop(self, crop: int, why: str) -> Geometry:
        return replace(self, crop_size=crop, input_hw=(crop, crop), depth_side=crop, why_crop=why)

    def decisions(self) -> list[Decision]:
        low, high = self.depth_range
        side = f"{self.depth_side} px {'crop' if self.crop_size else 'smallest image'}"
        bottleneck = self.depth_side // 2 ** (high - 1)
        why_depth = f"bottleneck >= {MIN_BOTTLENECK_PX} px: {side} / 2**{high - 1} = {bottleneck} px at depth {high}"
        depth = high if low == high else {"low": low, "high": high}
        out = [Decision("space.model", "depth", depth, why_depth)]
        if self.resize:
            out.append(Decision("space.transforms", "resize", list(self.resize), self.why_resize))
        else:
            out.append(Decision("space.transforms", None, why=f"no resize: {self.why_resize}"))
        out.append(Decision("space.transforms", "crop_mode", self.crop_mode, self.why_mode))
        if self.crop_size:
            out.append(Decision("space.transforms", "crop_size", self.crop_size, self.why_crop))
        return out


def plan_geometry(survey: Survey) -> Geometry:
    sizes = survey.train_sizes
    short = survey.short_sides
    if not short:
        raise PlanError(f"{survey.source}: no training images to plan for")
    p5, p95, median_short = _percentile(short, 0.05), _percentile(short, 0.95), statistics.median(short)
    spread = p95 / max(p5, 1)
    spread_text = f"short sides {short[0]}-{short[-1]} px, 95th/5th percentile {p95}/{p5} = {spread:.1f}"
    if spread > RESIZE_SPREAD:
        return _resized(survey, spread_text)
    _refuse_too_small(survey)
    why_resize = f"sizes are alike ({spread_text} <= {RESIZE_SPREAD})"
    val_pixels = statistics.fmean(h * w for h, w in survey.val_sizes) if survey.val_sizes else 0.0
    if median_short < 2 * CROP_LADDER[0]:
        why = (f"small images (median short side {median_short:g} px < {2 * CROP_LADDER[0]}): whole images, "
               "padded per batch")
        largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
        return Geometry(None, "none", None, largest, short[0], val_pixels, why_resize, why)
    crop = max(c for c in CROP_LADDER if c <= short[0]) if short[0] >= CROP_LADDER[0] else short[0]
    why_mode = f"median short side {median_short:g} px >= {2 * CROP_LADDER[0]}: random crops"
    why = f"the largest of {list(CROP_LADDER)} that every training image allows (smallest short side {short[0]} px)"
    return Geometry(None, "random", crop, (crop, crop), crop, val_pixels, why_resize, why_mode, why)


def _resized(survey: Survey, spread_text: str) -> Geometry:
    median_h = statistics.median(s[0] for s in survey.train_sizes)
    median_w = statistics.median(s[1] for s in survey.train_sizes)
    if min(median_h, median_w) < MIN_SIDE:
        raise PlanError(f"{survey.source}: the median image is {median_h:g}x{median_w:g} px (HxW); the smallest "
                        f"UNet (depth {MIN_DEPTH}) needs >= {MIN_SIDE} px per side for a {MIN_BOTTLENECK_PX} px "
                        "bottleneck, and upscaling most images to that adds nothing to learn from")
    h, w = (max(RESIZE_MULTIPLE, round(m / RESIZE_MULTIPLE) * RESIZE_MULTIPLE) for m in (median_h, median_w))
    why_resize = (f"sizes vary widely ({spread_text} > {RESIZE_SPREAD}): the median size, multiples of "
                  f"{RESIZE_MULTIPLE} (the report resized to its mean size)")
    fitting = [c for c in CROP_LADDER if c <= min(h, w)]
    crop = fitting[-1] if fitting else min(h, w) // 8 * 8
    why_mode = "five crops of each resized image: corners and centre (the report's FiveCrop)"
    why = f"the largest of {list(CROP_LADDER)} within the resized {h}x{w} (every image after the resize)"
    return Geometry((h, w), "five", crop, (crop, crop), crop, float(h * w), why_resize, why_mode, why)


def _refuse_too_small(survey: Survey) -> None:
    small = [(f, s) for f, s in zip(survey.train_files, survey.train_sizes) if min(s) < MIN_SIDE]
    if small:
        shown = ", ".join(f"{f} ({h}x{w})" for f, (h, w) in small[:5]) + (" ..." if len(small) > 5 else "")
        raise PlanError(f"{survey.source}: {len(small)} training image(s) are smaller than the smallest UNet can "
                        f"use: {shown} (HxW px); a depth-{MIN_DEPTH} UNet needs >= {MIN_SIDE} px per side for a "
                        f"{MIN_BOTTLENECK_PX} px bottleneck; remove or upscale them")
