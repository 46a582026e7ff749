"""Geometry rule: resize, crop mode and size, and the depth range, from the training images' sizes.

- Sizes that vary widely (the 95th percentile of the short sides over the 5th above 2) are resized
  to the median size, as the report resized to its mean size by hand, and trained on five crops.
- Otherwise small images (median short side under twice the smallest crop) train whole, and the
  rest on random crops.
- The crop is the largest of CROP_LADDER that the training images allow after the resize, all but
  a few outliers (at most OUTLIER_SHARE of them, from 4 images on): one 20x30 image among 480x640
  ones no longer makes the crop 20 px for all. Those few are padded to the crop with the ignore
  label (255, which loss and metric skip; `seg.transforms` and `seg.batch_augment` both pad so), and
  the plan says how many.
- Depth: up to DEPTH_SPAN levels, ending at the deepest that keeps the bottleneck >= 8 px.
- At a `data.scale` below 1 (the capacity rule trades resolution for width) the same rules run on
  the sizes the images will have once decoded at that scale.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from search.plan.decisions import Decision, PlanError
from search.plan.survey import Survey
from seg.data import scaled_size

CROP_LADDER = (32, 48, 64, 96, 128, 192, 256, 384, 512)  # each a multiple of 2**(deepest depth - 1) it allows
MIN_BOTTLENECK_PX = 8
MIN_DEPTH, MAX_DEPTH, DEPTH_SPAN = 2, 8, 3
MIN_SIDE = MIN_BOTTLENECK_PX * 2 ** (MIN_DEPTH - 1)  # the smallest UNet (depth 2) needs 16 px
RESIZE_SPREAD = 2.0
RESIZE_MULTIPLE = 16
OUTLIER_SHARE = 0.05  # training images that may be smaller than the crop (padded with 255), from 4 images on
OUTLIERS_FROM = 4


def outliers_allowed(n: int) -> int:
    """How many of n training images may be smaller than the crop: 5 %, at least one, from 4 images."""
    return max(1, math.floor(OUTLIER_SHARE * n)) if n >= OUTLIERS_FROM else 0


def scaled_sizes(sizes: tuple[tuple[int, int], ...], scale: float) -> tuple[tuple[int, int], ...]:
    """(H, W) sizes once decoded at `scale` (aspect kept; as `data.scale` resizes)."""
    if scale == 1.0:
        return sizes
    return tuple(scaled_size(h, w, scale) for h, w in sizes)


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
    val_sizes: tuple[tuple[int, int], ...]  # (H, W) of each validation image as decoded (before the resize policy)
    why_resize: str
    why_mode: str
    why_crop: str = ""  # why this crop size (none when whole images train)
    scale: float = 1.0  # data.scale: every image and label resized by this at decode
    train_sizes: tuple[tuple[int, int], ...] = field(default=(), repr=False)  # as decoded

    @property
    def padded(self) -> int:
        """Training images smaller than the crop on a side: padded with the ignore label to the crop."""
        if self.crop_mode != "random" or self.crop_size is None:
            return 0
        return sum(1 for h, w in self.train_sizes if min(h, w) < self.crop_size)

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

    def padding_note(self) -> str:
        """'' or what happens to the training images smaller than the crop."""
        if not self.padded:
            return ""
        return (f"; {self.padded} of {len(self.train_sizes)} training image(s) are smaller than the "
                f"{self.crop_size} px crop: padded to it with the ignore label (255)")

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
            out.append(Decision("space.transforms", "crop_size", self.crop_size, self.why_crop + self.padding_note()))
        return out


def plan_geometry(survey: Survey, scale: float = 1.0) -> Geometry:
    """The geometry of `survey`'s images once decoded at `scale` (1: their own size)."""
    if scale != 1.0:
        survey = replace(survey, train_sizes=scaled_sizes(survey.train_sizes, scale),
                         val_sizes=scaled_sizes(survey.val_sizes, scale))
    geo = _geometry(survey)
    if scale != 1.0:
        at = f"sizes at data.scale {scale:g}: "
        geo = replace(geo, why_resize=at + geo.why_resize, why_mode=at + geo.why_mode,
                      why_crop=at + geo.why_crop if geo.why_crop else "")
    return replace(geo, scale=scale, train_sizes=survey.train_sizes)


def _geometry(survey: Survey) -> Geometry:
    sizes = survey.train_sizes
    short = survey.short_sides
    if not short:
        raise PlanError(f"{survey.source}: no training images to plan for")
    p5, p95, median_short = _percentile(short, 0.05), _percentile(short, 0.95), statistics.median(short)
    spread = p95 / max(p5, 1)
    spread_text = f"short sides {short[0]}-{short[-1]} px, 95th/5th percentile {p95}/{p5} = {spread:.1f}"
    if spread > RESIZE_SPREAD:
        return _resized(survey, spread_text)
    allowed = outliers_allowed(len(short))
    _refuse_too_small(survey, allowed)
    why_resize = f"sizes are alike ({spread_text} <= {RESIZE_SPREAD})"
    if median_short < 2 * CROP_LADDER[0]:
        why = (f"small images (median short side {median_short:g} px < {2 * CROP_LADDER[0]}): whole images, "
               "padded per batch")
        largest = (max(h for h, _ in sizes), max(w for _, w in sizes))
        return Geometry(None, "none", None, largest, max(short[0], MIN_SIDE), survey.val_sizes, why_resize, why)
    side = short[allowed]  # the smallest short side once up to `allowed` outliers are left to padding
    crop = _ladder_crop(side)
    why_mode = f"median short side {median_short:g} px >= {2 * CROP_LADDER[0]}: random crops"
    if crop != _ladder_crop(short[0]):
        why = (f"the largest of {list(CROP_LADDER)} that the training images allow, all but up to {allowed} "
               f"outlier(s) ({OUTLIER_SHARE:.0%}; short side {side} px once they are left out, smallest {short[0]} px)")
    else:
        why = f"the largest of {list(CROP_LADDER)} that every training image allows (smallest short side {short[0]} px)"
    return Geometry(None, "random", crop, (crop, crop), crop, survey.val_sizes, why_resize, why_mode, why)


def _ladder_crop(side: int) -> int:
    """The largest crop of the ladder within `side` (the side itself below the ladder)."""
    return max(c for c in CROP_LADDER if c <= side) if side >= CROP_LADDER[0] else side


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
    return Geometry((h, w), "five", crop, (crop, crop), crop, survey.val_sizes, why_resize, why_mode, why)


def _refuse_too_small(survey: Survey, allowed: int) -> None:
    """Refuse images too small for any UNet, unless they are a few outliers among larger ones (padded)."""
    small = [(f, s) for f, s in zip(survey.train_files, survey.train_sizes) if min(s) < MIN_SIDE]
    if len(small) > allowed:
        shown = ", ".join(f"{f} ({h}x{w})" for f, (h, w) in small[:5]) + (" ..." if len(small) > 5 else "")
        raise PlanError(f"{survey.source}: {len(small)} training image(s) are smaller than the smallest UNet can "
                        f"use: {shown} (HxW px); a depth-{MIN_DEPTH} UNet needs >= {MIN_SIDE} px per side for a "
                        f"{MIN_BOTTLENECK_PX} px bottleneck; remove or upscale them")
