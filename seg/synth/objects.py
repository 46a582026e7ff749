"""How one object looks: its shape mask, its texture pattern and its palette colours."""

from __future__ import annotations

import numpy as np

from seg.synth.spec import NUM_COLOURS


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
