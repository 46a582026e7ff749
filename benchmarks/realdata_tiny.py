"""The generated stand-in for a real dataset that `python -m benchmarks.realdata --tiny` runs on: 48x64 px
photos of 3 classes (a background and two kinds of rectangles whose grey level follows the class, with
noise) in ROOT/train|val/images|labels, and a labelled test folder TEST/images|labels beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_HW = (32, 48)
TINY_COUNTS = {"train": 6, "val": 3, "test": 3}


def _pair(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    label = np.zeros((h, w), np.uint8)
    for cls in (1, 2):  # every image holds every class, so no class is missing from val or test
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        label[top: top + h // 3, left: left + w // 3] = cls
    grey = np.array([40, 140, 220], np.float64)[label]  # (H, W)
    image = grey[..., None].repeat(3, axis=2) + rng.normal(0, 12, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_tiny(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the tiny dataset under `root`; returns (data folder, test folder)."""
    rng = np.random.default_rng(seed)
    data, test = root / "data", root / "test"
    for split, count in TINY_COUNTS.items():
        base = test if split == "test" else data / split
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = _pair(rng, TINY_HW)
            Image.fromarray(image).save(base / "images" / f"{split}{i:02d}.png")
            Image.fromarray(label).save(base / "labels" / f"{split}{i:02d}.png")
    (data / "classes.txt").write_text("background\nbar\nbox\n")
    return data, test
