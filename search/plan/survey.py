"""What the plan measures in a dataset before anything is decoded into memory: the survey.

One label PNG is decoded at a time (its shape is its image's size; `load_dataset` checks that the
two agree before any trial), so a dataset too large for memory can still be planned, and refused
with its figures. Labels are read through ROOT/dataset.toml and the binary-mask rule exactly as
`load_dataset` reads them (`seg.data.conventions`). The survey is also logged as the plan's
fingerprint (`plan/fingerprint.json`), with the resolved dataset spec.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg.config import DataConfig
from seg.data import (
    IGNORE_INDEX,
    DatasetSpec,
    Pair,
    ValueTally,
    discover_splits,
    is_split_layout,
    read_dataset_spec,
    read_label,
    resolve_spec,
)
from seg.data.conventions import binary_lut, refuse_lossy_labels
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
    spec: DatasetSpec = field(default_factory=DatasetSpec)  # resolved: dataset.toml and the binary rule
    tally: ValueTally | None = field(default=None, compare=False, repr=False)  # values per file; None: unknown

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
            "dataset_spec": self.spec.to_dict(),
        }


def _read_labels(pairs: list[Pair], spec: DatasetSpec, split: str, tally: ValueTally) -> list[tuple[int, int]]:
    sizes = []
    for pair in pairs:
        label = read_label(pair.label, spec)  # class values or 255, not yet checked: the classes rule decides
        sizes.append((int(label.shape[0]), int(label.shape[1])))
        tally.add(split, str(pair.label), np.bincount(label.ravel(), minlength=256))
    return sizes


def survey_dataset(root: str | Path | None, data: DataConfig | None = None) -> Survey:
    """Survey the folder dataset at `root`, or the embedded one (generated once, as `search.run` would)."""
    data = data or DataConfig()
    embedded_names = None
    if root is None:
        from seg.synth import CLASSES, default_dataset_root

        folder = Path(default_dataset_root(seed=data.synth_seed, n_train=data.synth_train, n_val=data.synth_val))
        embedded_names = tuple(CLASSES)
    else:
        folder = Path(root)
    spec = read_dataset_spec(folder)
    val_fraction = None if folder.is_dir() and is_split_layout(folder) else (data.val_fraction or FLAT_VAL_FRACTION)
    path, train, val = discover_splits(folder, val_fraction, data.split_seed, spec)
    tally = ValueTally()
    train_sizes = _read_labels(train, spec, "train", tally)
    val_sizes = _read_labels(val, spec, "val", tally)
    resolved = resolve_spec(spec, tally)
    refuse_lossy_labels(resolved, tally, str(path))
    if resolved is not spec:
        tally = tally.remapped(binary_lut(resolved))
    val_counts = tally.pixels.get("val", np.zeros(256, dtype=np.int64))
    return Survey(
        source="the embedded dataset" if root is None else str(path), root=None if root is None else path,
        val_fraction=val_fraction, train_sizes=tuple(train_sizes), val_sizes=tuple(val_sizes),
        train_files=tuple(str(p.label) for p in train),
        train_pixels=tuple(int(c) for c in tally.pixels.get("train", np.zeros(256, dtype=np.int64))),
        val_values=frozenset(int(v) for v in np.flatnonzero(val_counts)),
        class_file_names=None if root is None else read_classes_file(path), embedded_names=embedded_names,
        spec=resolved, tally=tally)
