"""What the plan measures in a dataset before anything is decoded into memory: the survey.

One label PNG is decoded at a time (its shape is its image's size; `load_dataset` checks that the
two agree before any trial), so a dataset too large for memory can still be planned, and refused
with its figures. The survey is also logged as the plan's fingerprint (`plan/fingerprint.json`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seg.config import DataConfig
from seg.data import IGNORE_INDEX, decode_label, discover_splits
from seg.loaders import CLASSES_FILE, read_classes_file

FLAT_VAL_FRACTION = 0.2  # the plan's val share for a flat images/ + labels/ folder
BYTES_PER_PIXEL = 4  # decoded: 3 image bytes (RGB uint8) + 1 label byte


@dataclass(frozen=True)
class Survey:
    """Sizes, label values and class pixel counts of a dataset (train and val), read one file at a time."""

    source: str  # the dataset folder, or "the embedded dataset"
    root: Path | None  # None: the embedded dataset (data.root stays unset)
    val_fraction: float | None  # set for a flat layout, split as load_dataset will
    train_sizes: tuple[tuple[int, int], ...]  # (H, W) per training image
    val_sizes: tuple[tuple[int, int], ...]
    train_files: tuple[str, ...]  # the label file of each training image, for messages
    train_pixels: tuple[int, ...]  # 256 counts: label value -> pixels in the training labels
    val_values: frozenset[int]  # label values present in the validation labels
    class_file_names: tuple[str, ...] | None = None  # ROOT/classes.txt, when there is one
    embedded_names: tuple[str, ...] | None = None  # the embedded dataset's own class names

    @property
    def values(self) -> set[int]:
        """Label values used anywhere, 255 (ignore) excluded."""
        train = {v for v, n in enumerate(self.train_pixels) if n}
        return (train | set(self.val_values)) - {IGNORE_INDEX}

    @property
    def classes_file(self) -> str:
        return str((self.root or Path(".")) / CLASSES_FILE)

    @property
    def short_sides(self) -> list[int]:
        return sorted(min(h, w) for h, w in self.train_sizes)

    def decoded_bytes(self) -> int:
        """Memory the decoded dataset takes (train and val, as `load_dataset` holds it)."""
        return BYTES_PER_PIXEL * sum(h * w for h, w in (*self.train_sizes, *self.val_sizes))

    def fingerprint(self) -> dict[str, Any]:
        """A JSON summary: counts, size statistics, label values and class pixel counts."""
        def stats(values: list[int]) -> dict[str, float]:
            return {"min": min(values), "median": statistics.median(values), "max": max(values)}

        return {
            "source": self.source, "val_fraction": self.val_fraction,
            "counts": {"train": len(self.train_sizes), "val": len(self.val_sizes)},
            "train_height": stats([h for h, _ in self.train_sizes]),
            "train_width": stats([w for _, w in self.train_sizes]),
            "train_short_side": stats(self.short_sides),
            "val_short_side": stats([min(s) for s in self.val_sizes]) if self.val_sizes else None,
            "label_values": sorted(self.values),
            "train_class_pixels": {str(v): n for v, n in enumerate(self.train_pixels) if n and v != IGNORE_INDEX},
            "train_ignored_pixels": self.train_pixels[IGNORE_INDEX],
            "decoded_bytes": self.decoded_bytes(),
            "classes_file": self.class_file_names is not None,
        }


def _read_labels(files: list[Path]) -> tuple[list[tuple[int, int]], torch.Tensor]:
    sizes, counts = [], torch.zeros(256, dtype=torch.int64)
    for path in files:
        mask = decode_label(path, 255)  # every value 0..254 is a class here: the classes rule decides
        sizes.append((int(mask.shape[0]), int(mask.shape[1])))
        counts += torch.bincount(mask.reshape(-1).long(), minlength=256)
    return sizes, counts


def survey_dataset(root: str | Path | None, data: DataConfig | None = None) -> Survey:
    """Survey the folder dataset at `root`, or the embedded one (generated once, as `search.run` would)."""
    data = data or DataConfig()
    embedded_names = None
    if root is None:
        from seg.synth import CLASSES, default_dataset_root

        folder = default_dataset_root(seed=data.synth_seed, n_train=data.synth_train, n_val=data.synth_val)
        embedded_names = tuple(CLASSES)
    else:
        folder = Path(root)
    flat = not (Path(folder) / "train").exists() and not (Path(folder) / "val").exists()
    val_fraction = (data.val_fraction or FLAT_VAL_FRACTION) if flat else None
    path, train, val = discover_splits(folder, val_fraction, data.split_seed)
    train_sizes, train_counts = _read_labels([p.label for p in train])
    val_sizes, val_counts = _read_labels([p.label for p in val])
    return Survey(
        source="the embedded dataset" if root is None else str(path), root=None if root is None else path,
        val_fraction=val_fraction, train_sizes=tuple(train_sizes), val_sizes=tuple(val_sizes),
        train_files=tuple(str(p.label) for p in train), train_pixels=tuple(int(c) for c in train_counts),
        val_values=frozenset(int(v) for v in torch.nonzero(val_counts).flatten()),
        class_file_names=None if root is None else read_classes_file(path), embedded_names=embedded_names)
