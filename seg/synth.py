"""Procedural 10-class scene dataset: the embedded default dataset.

No dataset can be downloaded, so the package ships this generator. It renders
scenes of several objects on a textured background and writes them once, in
the same folder layout a user's dataset would have::

    ROOT/train/images/000000.png   RGB image
    ROOT/train/labels/000000.png   "L" image of class ids 0..9 (same stem)
    ROOT/val/images/...            same for the validation split
    ROOT/val/labels/...

Classes: background (0) plus nine object classes, three per shape (disk, square,
triangle), each with its own texture (see ``CLASSES``). Every colour -- object
foreground, texture colours and background -- is drawn from one shared palette
independently of the class, so colour says nothing about the class. Textures come
at two scales: fine ones (2-4 px) are a local cue that a shallow net learns in an
epoch; coarse ones (6-8 px cells, rings, solid) need a receptive field of 12-48 px
and the object's shape, which is where depth and width pay.

Generation is deterministic: each image has its own generator derived from
(seed, split, index), so the same seed gives byte-identical files whatever the
order of generation.

Run it as a script to write a dataset and print statistics::

    python -m seg.synth --out /tmp/synth [--seed 0] [--n-train 400] [--n-val 100]

From code, ``default_dataset_root()`` returns the cached default dataset
(``$SEG_CACHE_DIR`` or ``~/.cache/unet-search``), generating it once.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FORMAT_VERSION = "synth-v5"  # bump when the rendering changes: it is part of the cache key
COMPLETE_MARKER = "COMPLETE"
SPLITS: tuple[str, ...] = ("train", "val")

SHAPES: tuple[str, ...] = ("disk", "square", "triangle")
# (shape, texture) of classes 1..9; 0 is the background. Every texture belongs to one class.
CLASS_SPECS: tuple[tuple[str, str], ...] = (
    ("disk", "solid"), ("disk", "rings"), ("disk", "dots"),
    ("square", "checked-fine"), ("square", "checked-coarse"), ("square", "grid"),
    ("triangle", "striped-fine"), ("triangle", "striped-coarse"), ("triangle", "speckled"),
)
TEXTURES: tuple[str, ...] = tuple(t for _, t in CLASS_SPECS)
CLASSES: tuple[str, ...] = ("background",) + tuple(f"{s}-{t}" for s, t in CLASS_SPECS)
NUM_CLASSES = len(CLASSES)

_SHAPE_WORDS = {
    "disk": "a filled disk",
    "square": "a square, axis-aligned or rotated by up to 15 degrees",
    "triangle": "a roughly equilateral triangle at any rotation",
}
_TEXTURE_WORDS = {
    "solid": "painted in one palette colour",
    "rings": "with concentric rings of two palette colours (period 6-8 px)",
    "dots": "with a lattice of dots of a second palette colour (spacing 5-6 px)",
    "checked-fine": "with a fine checkerboard of two palette colours (cells 2-3 px)",
    "checked-coarse": "with a coarse checkerboard of two palette colours (cells 6-8 px)",
    "grid": "with thin grid lines of a second palette colour (spacing 5-7 px)",
    "striped-fine": "with fine stripes of two palette colours (random orientation, period 5-6 px)",
    "striped-coarse": "with coarse stripes of two palette colours (random orientation, period 10-14 px)",
    "speckled": "sprinkled at random with single pixels (20%) of a second palette colour",
}
CLASS_DESCRIPTIONS: dict[str, str] = {
    "background": "everything else: a plain or smoothly graded palette colour, "
    "with thin lines and small specks of clutter",
    **{f"{s}-{t}": f"{_SHAPE_WORDS[s]} {_TEXTURE_WORDS[t]}" for s, t in CLASS_SPECS},
}

# One shared palette for objects, textures, clutter and background, shape (12, 3).
# Colours are mutually far apart (min RGB distance ~80) so that two-colour
# textures stay visible under the pixel noise (sigma ~8).
PALETTE: np.ndarray = np.array(
    [
        (230, 25, 75),  # red
        (60, 180, 75),  # green
        (255, 225, 25),  # yellow
        (0, 130, 200),  # blue
        (245, 130, 48),  # orange
        (145, 30, 180),  # purple
        (70, 240, 240),  # cyan
        (240, 50, 230),  # magenta
        (250, 250, 250),  # white
        (30, 30, 30),  # near-black
        (128, 128, 128),  # grey
        (150, 90, 30),  # brown
    ],
    dtype=np.uint8,
)
_PALETTE_F = PALETTE.astype(np.float32)
NUM_COLOURS = len(PALETTE)

# Fixed PNG options: PIL writes no timestamp or text chunks unless asked, so
# equal arrays give equal bytes.
_PNG_OPTIONS: dict[str, Any] = {"format": "PNG", "optimize": False, "compress_level": 6}


@dataclass(frozen=True)
class SceneParams:
    """Difficulty knobs of ``render_scene`` (all ranges are inclusive)."""

    # Dense scenes: more object pixels per crop means more learning signal per step on a CPU budget.
    n_objects: tuple[int, int] = (6, 12)  # objects per image
    object_size: tuple[int, int] = (20, 44)  # disk diameter / square side / triangle height, px
    noise_sigma: float = 5.0  # additive Gaussian pixel noise on 0..255
    n_clutter: tuple[int, int] = (2, 6)  # thin lines + specks, background class
    max_occlusion: float = 0.4  # an object placement is rejected if it hides more of an earlier one
    blur: bool = False  # 3x3 binomial blur before the noise (halves the contrast of 4 px stripes)

    def __post_init__(self) -> None:
        for name in ("n_objects", "object_size", "n_clutter"):
            lo, hi = getattr(self, name)
            object.__setattr__(self, name, (int(lo), int(hi)))  # lists from JSON -> tuples
            if lo < 0 or hi < lo:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")
        if self.object_size[0] < 6:
            raise ValueError("object_size must be at least 6 px for shapes to be recognisable")
        if self.noise_sigma < 0:
            raise ValueError("noise_sigma must be >= 0")
        if not 0.0 <= self.max_occlusion <= 1.0:
            raise ValueError("max_occlusion must be in [0, 1]")


def scene_params(**knobs: Any) -> SceneParams:
    """Validate knob names/values and fill in defaults (TypeError on an unknown knob)."""
    return SceneParams(**knobs)


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


def _shape_mask(
    rng: np.random.Generator, shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, size: float
) -> np.ndarray:
    """Bool mask (h, w) of one shape centred at (cy, cx) on the coordinate grids yy, xx."""
    dy, dx = yy - cy, xx - cx
    if shape == "disk":
        radius = size / 2.0
        return dy * dy + dx * dx <= radius * radius
    if shape == "square":
        # Side 0.9*size keeps its area close to the disk's; rotation stays small
        # so that a square never looks like a diamond.
        theta = np.deg2rad(rng.uniform(-15.0, 15.0)) if rng.random() < 0.7 else 0.0
        c, s = np.cos(theta), np.sin(theta)
        u, v = c * dx + s * dy, -s * dx + c * dy  # box-aligned coordinates
        half = 0.45 * size
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":
        # Equilateral triangle of height ~size (circumradius 2/3 of the height),
        # any rotation, vertices jittered a little so not all triangles are congruent.
        radius = (2.0 / 3.0) * size
        angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.12, 0.12, 3)
        radii = radius * rng.uniform(0.9, 1.05, 3)
        vy, vx = radii * np.sin(angles), radii * np.cos(angles)  # (3,), counter-clockwise in (x, y)
        inside = np.ones(dy.shape, dtype=bool)
        for i in range(3):  # half-plane test for each edge
            j = (i + 1) % 3
            cross = (vx[j] - vx[i]) * (dy - vy[i]) - (vy[j] - vy[i]) * (dx - vx[i])
            inside &= cross >= 0
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, period: float) -> np.ndarray:
    angle = rng.uniform(0.0, np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy) / period + rng.random()
    return np.floor(2.0 * t).astype(np.int64) % 2 == 1  # half a period per colour


def _checks(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cell: float) -> np.ndarray:
    oy, ox = rng.uniform(0, 2 * cell, 2)
    return (np.floor((yy + oy) / cell) + np.floor((xx + ox) / cell)).astype(np.int64) % 2 == 1


def _lattice(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance (y, x) of each pixel to the nearest lattice node."""
    oy, ox = rng.uniform(0, spacing, 2)
    fy = np.abs(((yy + oy) % spacing) - spacing / 2)
    fx = np.abs(((xx + ox) % spacing) - spacing / 2)
    return fy, fx


def _texture_bits(rng: np.random.Generator, texture: str, yy: np.ndarray, xx: np.ndarray) -> np.ndarray | None:
    """Which of the two texture colours each pixel takes: bool (h, w), None for solid."""
    if texture == "solid":
        return None
    if texture == "striped-fine":
        # Period >= 5 px: finer rotated stripes alias into noise-like patterns (confused with speckle).
        return _stripes(rng, yy, xx, rng.uniform(5.0, 6.0))
    if texture == "striped-coarse":
        return _stripes(rng, yy, xx, rng.uniform(10.0, 14.0))
    if texture == "checked-fine":
        return _checks(rng, yy, xx, rng.uniform(2.0, 3.0))
    if texture == "checked-coarse":
        return _checks(rng, yy, xx, rng.uniform(6.0, 8.0))
    if texture == "rings":
        # Centred on the object's own centre, so the rings also trace its round shape.
        cy, cx = yy.mean(), xx.mean()
        return np.floor(2.0 * np.hypot(yy - cy, xx - cx) / rng.uniform(6.0, 8.0)).astype(np.int64) % 2 == 1
    if texture == "dots":
        fy, fx = _lattice(rng, yy, xx, rng.uniform(5.0, 6.0))
        return fy * fy + fx * fx <= 1.6 ** 2
    if texture == "grid":
        fy, fx = _lattice(rng, yy, xx, rng.uniform(5.0, 7.0))
        return (fy <= 0.75) | (fx <= 0.75)
    if texture == "speckled":
        # Sparse random single pixels: irregular, unlike every periodic texture, far above the noise.
        return rng.random(yy.shape) < 0.2
    raise ValueError(f"unknown texture {texture!r}")


def _pick_colours(rng: np.random.Generator, n: int, excluded: set[int]) -> list[int]:
    """n distinct palette indices, avoiding `excluded` while enough colours remain."""
    allowed = [c for c in range(NUM_COLOURS) if c not in excluded]
    if len(allowed) < n:  # only with many overlapping neighbours; fall back to the palette
        allowed = list(range(NUM_COLOURS))
    return [int(allowed[i]) for i in rng.choice(len(allowed), size=n, replace=False)]


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


# --------------------------------------------------------------------------- writing


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Generator for one image, independent of generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _save_png(array: np.ndarray, path: Path) -> None:
    mode = "RGB" if array.ndim == 3 else "L"
    Image.fromarray(array, mode=mode).save(path, **_PNG_OPTIONS)


def _write_split(
    root: Path, split: str, n: int, seed: int, min_size: int, max_size: int, params: SceneParams
) -> np.ndarray:
    """Render and write one split; returns per-class pixel counts, int64 (NUM_CLASSES,)."""
    image_dir, label_dir = root / split / "images", root / split / "labels"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for index in range(n):
        rng = _image_rng(seed, split, index)
        # Height and width independently, like photographs of varied size.
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        image, label = _render_scene(rng, height, width, params)
        stem = f"{index:06d}.png"
        _save_png(image, image_dir / stem)
        _save_png(label, label_dir / stem)
        counts += np.bincount(label.ravel(), minlength=NUM_CLASSES)
    return counts


def _generate(
    root: Path, *, seed: int, n_train: int, n_val: int, min_size: int, max_size: int, params: SceneParams
) -> np.ndarray:
    if not 8 <= min_size <= max_size:
        raise ValueError(f"need 8 <= min_size <= max_size, got {min_size}, {max_size}")
    if n_train < 0 or n_val < 0:
        raise ValueError("n_train and n_val must be >= 0")
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for split, n in zip(SPLITS, (n_train, n_val)):
        counts += _write_split(root, split, n, seed, min_size, max_size, params)
    return counts


def generate_dataset(
    root: Path,
    *,
    seed: int = 0,
    n_train: int = 400,
    n_val: int = 100,
    min_size: int = 96,
    max_size: int = 160,
    **knobs: Any,
) -> Path:
    """Write ``root/{train,val}/{images,labels}/NNNNNN.png``; returns root.

    ``knobs`` are the ``SceneParams`` fields. Writes no COMPLETE marker (that is
    ``default_dataset_root``'s job).
    """
    root = Path(root)
    _generate(
        root, seed=seed, n_train=n_train, n_val=n_val, min_size=min_size, max_size=max_size,
        params=scene_params(**knobs),
    )
    return root


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """$SEG_CACHE_DIR, else ~/.cache/unet-search."""
    env = os.environ.get("SEG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unet-search"


def dataset_parameters(
    *, seed: int = 0, n_train: int = 400, n_val: int = 100, min_size: int = 96, max_size: int = 160,
    **knobs: Any,
) -> dict[str, Any]:
    """Canonical JSON-able parameters (defaults filled in), the cache key's input."""
    params = scene_params(**knobs)
    return {
        "format": FORMAT_VERSION,
        "seed": int(seed),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "scene": json.loads(json.dumps(dataclasses.asdict(params))),  # tuples -> lists
    }


def _parameters_hash(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]


def content_hash(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every file but the marker, sorted."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def is_complete(root: Path, parameters: dict[str, Any] | None = None) -> bool:
    """True if root holds a COMPLETE marker (for `parameters`, when given)."""
    try:
        marker = json.loads((Path(root) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and (parameters is None or marker.get("parameters") == parameters)


def _discard(path: Path) -> None:
    """Remove a directory that is not a complete dataset.

    It is first renamed to a unique name so that a concurrent caller never sees
    it half-deleted; if it is already gone, someone else dealt with it.
    """
    trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temps(cache: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temp/trash dirs left by crashed runs, old enough that no live run owns them."""
    now = time.time()
    for leftover in [*cache.glob(f".{FORMAT_VERSION}-*.tmp-*"), *cache.glob(f".{FORMAT_VERSION}-*.trash-*")]:
        try:
            if now - leftover.stat().st_mtime > max_age_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def default_dataset_root(
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    n_train: int = 400,
    n_val: int = 100,
    **knobs: Any,
) -> Path:
    """Return ``CACHE/synth-v5-<hash>/``, generating the dataset there once.

    Safe for concurrent callers: each generates into its own temporary sibling
    directory (COMPLETE marker written last) and renames it into place
    atomically; whoever loses the race discards its copy. The final path thus
    only ever holds a complete dataset. ``knobs``: min_size, max_size and the
    ``SceneParams`` fields.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    parameters = dataset_parameters(seed=seed, n_train=n_train, n_val=n_val, **knobs)
    name = f"{FORMAT_VERSION}-{_parameters_hash(parameters)}"
    final = cache / name
    if is_complete(final, parameters):
        return final

    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(cache)
    tmp = cache / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        counts = _generate(
            tmp, seed=parameters["seed"], n_train=parameters["n_train"], n_val=parameters["n_val"],
            min_size=parameters["min_size"], max_size=parameters["max_size"],
            params=scene_params(**parameters["scene"]),
        )
        marker = {
            "parameters": parameters,
            "content_sha256": content_hash(tmp),
            "classes": list(CLASSES),
            "class_pixel_counts": [int(c) for c in counts],
        }
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        for _ in range(3):
            try:
                os.rename(tmp, final)  # atomic; fails if final is a non-empty dir
                return final
            except OSError:
                if is_complete(final, parameters):
                    return final  # another process finished first; ours is discarded below
                if final.exists():
                    _discard(final)  # leftover without a valid marker: never a dataset
                # else it vanished in between; just retry the rename
        raise RuntimeError(f"could not move the generated dataset into {final}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _format_frequencies(counts: np.ndarray) -> str:
    freqs = counts / max(int(counts.sum()), 1)
    return "\n".join(f"  {i:2d} {name:<18s} {f:7.2%}" for i, (name, f) in enumerate(zip(CLASSES, freqs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seg.synth", description="Write the synthetic 10-class scene dataset."
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (ROOT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--min-size", type=int, default=96)
    parser.add_argument("--max-size", type=int, default=160)
    parser.add_argument("--noise-sigma", type=float, default=SceneParams.noise_sigma)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    counts = _generate(
        args.out, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
        min_size=args.min_size, max_size=args.max_size,
        params=scene_params(noise_sigma=args.noise_sigma),
    )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.n_train} train + {args.n_val} val image/label pairs to {args.out} in {elapsed:.2f} s")
    print("pixel frequency per class:")
    print(_format_frequencies(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
