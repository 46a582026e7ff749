"""Rendering one scene: background, clutter, then textured objects with limited occlusion.

Any change to what is rendered here (or in :mod:`seg.synth.objects` and
:mod:`seg.synth.spec`) must bump ``FORMAT_VERSION`` in :mod:`seg.synth.writer`:
it is part of the dataset cache key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seg.synth.objects import _pick_colours, _shape_mask, _texture_bits
from seg.synth.spec import _PALETTE_F, CLASS_SPECS, NUM_COLOURS, SceneParams, scene_params

# --------------------------------------------------------------------------- rendering


def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, two float32 arrays of shape (H, W)."""
    yy, xx = np.meshgrid(
        np.arange(height, dtype=np.float32) + 0.5,
        np.arange(width, dtype=np.float32) + 0.5,
        indexing="ij",
    )
    return yy, xx


def _paint_background(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, set[int]]:
    """Plain colour or smooth linear/radial gradient between two palette colours.

    Returns the float32 image (H, W, 3) and the palette indices used, which
    objects then avoid so that a solid object never vanishes into the background.
    """
    h, w = yy.shape
    c1, c2 = (int(c) for c in rng.choice(NUM_COLOURS, size=2, replace=False))
    mode = rng.choice(3, p=[0.3, 0.45, 0.25])  # plain / linear / radial
    if mode == 0:
        weight = np.zeros((h, w), dtype=np.float32)
        used = {c1}
    elif mode == 1:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        proj = np.cos(angle) * xx + np.sin(angle) * yy  # (H, W)
        weight = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        used = {c1, c2}
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        dist = np.hypot(yy - cy, xx - cx)
        weight = dist / max(float(dist.max()), 1.0)
        used = {c1, c2}
    # Never the full way to c2: the background stays mostly one hue.
    weight = (weight * rng.uniform(0.5, 1.0)).astype(np.float32)[..., None]  # (H, W, 1)
    image = _PALETTE_F[c1] * (1.0 - weight) + _PALETTE_F[c2] * weight  # (H, W, 3)
    return image.astype(np.float32), used


def _segment_mask(
    yy: np.ndarray, xx: np.ndarray, p0: np.ndarray, p1: np.ndarray, half_width: float
) -> np.ndarray:
    """Pixels within half_width of the segment p0-p1 ((y, x) points); bool (H, W)."""
    d = p1 - p0
    length2 = max(float(d @ d), 1e-6)
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / length2, 0.0, 1.0)
    dy = yy - (p0[0] + t * d[0])
    dx = xx - (p0[1] + t * d[1])
    return dy * dy + dx * dx <= half_width * half_width


def _paint_clutter(
    rng: np.random.Generator,
    image: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    count: int,
    background_colours: set[int],
) -> None:
    """Thin lines and small specks in palette colours, painted before the objects.

    They stay background class: objects occlude them, never the reverse, so no
    object gets background holes. Specks (radius <= 2.5 px) are far smaller than
    the smallest object, and single lines are not periodic like stripes.
    """
    h, w = yy.shape
    colours = [c for c in range(NUM_COLOURS) if c not in background_colours]
    for _ in range(count):
        colour = _PALETTE_F[colours[rng.integers(len(colours))]]
        if rng.random() < 0.5:
            p0 = rng.uniform((0, 0), (h, w)).astype(np.float32)
            angle = rng.uniform(0.0, 2.0 * np.pi)
            length = rng.uniform(15.0, 0.6 * max(h, w))
            p1 = p0 + length * np.array([np.sin(angle), np.cos(angle)], dtype=np.float32)
            half_width = rng.uniform(0.5, 1.0)
            box = _bounding_box(np.minimum(p0, p1) - 1, np.maximum(p0, p1) + 1, h, w)
            mask = _segment_mask(yy[box], xx[box], p0, p1, half_width)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            radius = rng.uniform(1.0, 2.5)
            box = _bounding_box((cy - 3, cx - 3), (cy + 3, cx + 3), h, w)
            mask = (yy[box] - cy) ** 2 + (xx[box] - cx) ** 2 <= radius * radius
        image[box][mask] = colour


def _bounding_box(lo: Any, hi: Any, h: int, w: int) -> tuple[slice, slice]:
    """(slice_y, slice_x) covering the points (y, x) from lo to hi, clipped to the image."""
    return (
        slice(max(0, int(np.floor(lo[0]))), min(h, int(np.ceil(hi[0])) + 1)),
        slice(max(0, int(np.floor(lo[1]))), min(w, int(np.ceil(hi[1])) + 1)),
    )


def _blur3(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1]/4 blur of an (H, W, C) float image with edge padding."""
    p = np.pad(image, ((1, 1), (0, 0), (0, 0)), mode="edge")
    image = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    p = np.pad(image, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4


def render_scene(
    rng: np.random.Generator, height: int, width: int, **knobs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene; returns (image uint8 (H, W, 3), label uint8 (H, W)).

    Knobs (see ``SceneParams``): n_objects, object_size, noise_sigma,
    n_clutter, max_occlusion, blur.
    """
    return _render_scene(rng, height, width, scene_params(**knobs))


def _render_scene(
    rng: np.random.Generator, height: int, width: int, params: SceneParams
) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _pixel_grid(height, width)
    image, background_colours = _paint_background(rng, yy, xx)  # float32 (H, W, 3)
    n_clutter = int(rng.integers(params.n_clutter[0], params.n_clutter[1] + 1))
    _paint_clutter(rng, image, yy, xx, n_clutter, background_colours)

    label = np.zeros((height, width), dtype=np.uint8)
    # Instance bookkeeping for the occlusion limit: instance id per pixel (0 = none),
    # full area and currently visible pixel count per instance, colours per instance.
    instance = np.zeros((height, width), dtype=np.int32)
    area: list[int] = [0]
    visible = np.zeros(1, dtype=np.int64)
    instance_colours: list[set[int]] = [set()]

    n_objects = int(rng.integers(params.n_objects[0], params.n_objects[1] + 1))
    for _ in range(n_objects):
        class_index = int(rng.integers(len(CLASS_SPECS)))
        shape, texture = CLASS_SPECS[class_index]
        placed = _place_object(rng, params, shape, yy, xx, instance, area, visible)
        if placed is None:
            continue  # scene too crowded for this object
        box, mask = placed  # box: (slice_y, slice_x); mask: bool (h, w) within the box
        new_id = len(area)
        covered = np.bincount(instance[box][mask], minlength=new_id)  # pixels taken from each instance
        excluded = set(background_colours)
        for j in np.flatnonzero(covered[1:]) + 1:
            excluded |= instance_colours[j]  # touching objects never share a colour
        bits = _texture_bits(rng, texture, yy[box], xx[box])
        colours = _pick_colours(rng, 1 if bits is None else 2, excluded)
        if bits is None:
            image[box][mask] = _PALETTE_F[colours[0]]
        else:
            image[box][mask] = np.where(bits[mask][:, None], _PALETTE_F[colours[1]], _PALETTE_F[colours[0]])
        label[box][mask] = 1 + class_index
        instance[box][mask] = new_id
        visible = np.append(visible - covered, int(mask.sum()))
        area.append(int(mask.sum()))
        instance_colours.append(set(colours))

    if params.blur:
        image = _blur3(image)
    if params.noise_sigma > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(params.noise_sigma)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _place_object(
    rng: np.random.Generator,
    params: SceneParams,
    shape: str,
    yy: np.ndarray,
    xx: np.ndarray,
    instance: np.ndarray,
    area: list[int],
    visible: np.ndarray,
    tries: int = 20,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Draw size/position until no earlier object would lose more than
    max_occlusion of its area (so every object keeps a recognisable shape).

    Returns ((slice_y, slice_x), bool mask within that box) or None. The mask is
    computed only inside the bounding box, which keeps rendering cheap.
    """
    h, w = instance.shape
    full_area = np.asarray(area, dtype=np.float64)
    for _ in range(tries):
        size = float(rng.uniform(params.object_size[0], params.object_size[1]))
        margin = min(0.5 * size, 0.5 * min(h, w))  # keep the centre so most of the object is inside
        cy, cx = rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)
        reach = 0.75 * size  # covers disk radius, rotated square half-diagonal, triangle circumradius
        box = _bounding_box((cy - reach, cx - reach), (cy + reach, cx + reach), h, w)
        mask = _shape_mask(rng, shape, yy[box], xx[box], cy, cx, size)
        if mask.sum() < 0.5 * size * size * 0.4:  # mostly outside the image; try again
            continue
        covered = np.bincount(instance[box][mask], minlength=len(area))
        remaining = visible - covered
        if np.all(remaining[1:] >= (1.0 - params.max_occlusion) * full_area[1:]):
            return box, mask
    return None
