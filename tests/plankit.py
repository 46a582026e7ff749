"""The planner's test datasets, five shapes a user's folder can have, each small enough to train in seconds:

- `tiny`: 40-60 px images (seg.synth), smaller than any crop worth taking;
- `large`: 600-900 px images (seg.synth), few of them;
- `three`: seg.synth scenes relabelled to 3 fairly balanced classes;
- `voc`: 21 classes as VOC-style palette PNGs with 255 borders, a classes.txt, and sizes that vary widely;
- `dominant`: one class covering 97 % of the pixels.

Plus `labelled_folder` for the error cases (labels of given values and sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from seg.predict import palette
from seg.synth import generate_dataset

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
               "tv/monitor")
# (H, W) of the VOC-style training images: short sides 48-200 px, so the plan resizes them.
VOC_SIZES = ((48, 64), (56, 80), (64, 96), (80, 120), (96, 128), (112, 150), (128, 160), (144, 180), (160, 200),
             (176, 220), (192, 240), (200, 260))


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    images, labels = root / split / "images", root / split / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    return images, labels


def _write_pair(root: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray, mode: str = "L") -> None:
    images, labels = _split_dirs(root, split)
    Image.fromarray(image).save(images / f"{stem}.png")
    if mode == "P":  # the palette indices are the classes, as in VOC's SegmentationClass PNGs
        png = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
        png.putpalette(palette(256))
    else:
        png = Image.fromarray(label)
    png.save(labels / f"{stem}.png")


def _paint(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image whose colour follows the label (class c is grey level 12 c), with noise."""
    image = (label.astype(np.int64) * 12 % 256)[..., None].repeat(3, axis=2) + rng.normal(0, 8, (*label.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def relabel(root: Path, mapping: Callable[[np.ndarray], np.ndarray]) -> None:
    for path in root.glob("*/labels/*.png"):
        with Image.open(path) as img:
            Image.fromarray(mapping(np.asarray(img)).astype(np.uint8)).save(path)


def write_voc(root: Path, n_val: int = 4) -> Path:
    """21 classes, four rectangles an image (every class appears), 2-px 255 borders, palette PNG labels."""
    rng = np.random.default_rng(21)
    sizes = [*VOC_SIZES, *VOC_SIZES[2: 2 + n_val]]
    for i, (h, w) in enumerate(sizes):
        label = np.zeros((h, w), np.uint8)
        for j in range(4):
            cls = 1 + (i * 4 + j) % 20
            top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
            bottom, right = top + h // 3, left + w // 3
            label[top:bottom, left:right] = 255  # the border VOC draws around objects
            label[top + 2: bottom - 2, left + 2: right - 2] = cls
        split, stem = ("train", f"{i:03d}") if i < len(VOC_SIZES) else ("val", f"{i:03d}")
        _write_pair(root, split, stem, _paint(label, rng), label, mode="P")
    (root / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    return root


def write_dominant(root: Path, n_train: int = 10, n_val: int = 4) -> Path:
    """72x88 images of class 0 with one 14x14 square of class 1 or 2: class 0 covers 96.9 % of the pixels."""
    rng = np.random.default_rng(97)
    for i in range(n_train + n_val):
        label = np.zeros((72, 88), np.uint8)
        top, left = rng.integers(0, 72 - 14), rng.integers(0, 88 - 14)
        label[top: top + 14, left: left + 14] = 1 + i % 2
        split = "train" if i < n_train else "val"
        _write_pair(root, split, f"{i:03d}", _paint(label, rng), label)
    return root


def labelled_folder(root: Path, labels: Sequence[np.ndarray], n_val: int = 1) -> Path:
    """A train/val folder with these label arrays (the last `n_val` in val) and matching noise images."""
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        split = "val" if i >= len(labels) - n_val else "train"
        _write_pair(root, split, f"{i:03d}", _paint(label, rng), label.astype(np.uint8))
    return root


def write_plan_datasets(base: Path) -> dict[str, Path]:
    """The five datasets under `base`, by name."""
    roots = {name: base / name for name in ("tiny", "large", "three", "voc", "dominant")}
    generate_dataset(roots["tiny"], n_train=8, n_val=4, min_size=40, max_size=60)
    generate_dataset(roots["large"], n_train=3, n_val=2, min_size=600, max_size=900)
    generate_dataset(roots["three"], n_train=12, n_val=4, min_size=64, max_size=96)
    # background; disks and squares-checked-fine; the rest: about 66 / 18 / 16 % of the pixels
    relabel(roots["three"], lambda a: np.where(a == 0, 0, np.where(a <= 4, 1, 2)))
    write_voc(roots["voc"])
    write_dominant(roots["dominant"])
    return roots
