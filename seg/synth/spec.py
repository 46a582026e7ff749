"""What the synthetic dataset contains: classes, their descriptions, the palette and the scene knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
