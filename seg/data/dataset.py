"""Decoded datasets in memory: splits, mean/std, and the process-level cache of :func:`load_dataset`."""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from seg.data.conventions import (
    ValueTally,
    binary_lut,
    label_warnings,
    refuse_lossy_labels,
    require_two_classes,
    resolve_spec,
)
from seg.data.dataset_spec import DatasetSpec, read_dataset_spec
from seg.data.decode import _check_label_values, _check_sizes, _validate_num_classes, decode_image, read_label
from seg.data.discover import Pair
from seg.data.errors import LabelWarning, UnreadableFileError
from seg.data.layout import _discover, _resolve_root, _validate_fraction, find_labelled_folder


@dataclass(frozen=True, eq=False)
class Split:
    """Decoded samples of one split, held in memory.

    ``images[i]`` is uint8 ``(3, H, W)`` RGB and ``masks[i]`` uint8 ``(H, W)``
    (class index or ``IGNORE_INDEX``) for ``pairs[i]``.  Compared by identity.
    """

    pairs: tuple[Pair, ...]
    images: tuple[torch.Tensor, ...]
    masks: tuple[torch.Tensor, ...]

    def __post_init__(self) -> None:
        if not len(self.pairs) == len(self.images) == len(self.masks):
            raise ValueError(
                f"Split needs as many images and masks as pairs, got {len(self.pairs)} pairs, "
                f"{len(self.images)} images and {len(self.masks)} masks"
            )

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True, eq=False)
class SegmentationData:
    """A validated, decoded dataset; mean/std are per RGB channel on the [0, 1] scale over train."""

    root: Path
    num_classes: int
    train: Split
    val: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    spec: DatasetSpec = field(default_factory=DatasetSpec)  # resolved: the binary rule included
    scale: float = 1.0


def _validate_scale(scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (math.isfinite(scale) and 0 < scale <= 1):
        raise ValueError(f"scale={scale!r}: expected a resize factor with 0 < scale <= 1")


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """(H, W) of an HxW image resized by `scale` (`data.scale`): round(side * scale), at least 1 px, aspect kept.
    The one rule for decode, the Predictor and the planner."""
    return max(1, round(h * scale)), max(1, round(w * scale))


def _rescale(image: torch.Tensor, mask: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images antialiased bilinear, labels nearest, both to round(side * scale) (at least 1 px)."""
    if scale == 1.0:
        return image, mask
    h, w = mask.shape
    size = list(scaled_size(h, w, scale))
    small = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)  # (3, h, w)
    labels = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST_EXACT)[0]  # (h, w)
    return small.contiguous(), labels.contiguous()


def _read_split(pairs: Sequence[Pair], spec: DatasetSpec, split: str,
                tally: ValueTally) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Images and labels read through the spec (not yet resolved or checked), counted into ``tally``."""
    images: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    for pair in pairs:
        image = decode_image(pair.image)
        label = read_label(pair.label, spec)
        _check_sizes(pair, image, torch.from_numpy(label))
        tally.add(split, str(pair.label), np.bincount(label.ravel(), minlength=256))
        images.append(image)
        labels.append(label)
    return images, labels


def _finish_split(pairs: Sequence[Pair], images: list[torch.Tensor], labels: list[np.ndarray], lut: np.ndarray,
                  num_classes: int, scale: float) -> Split:
    out_images, masks = [], []
    for pair, image, label in zip(pairs, images, labels):
        mask = torch.from_numpy(_check_label_values(lut[label], pair.label, num_classes))
        image, mask = _rescale(image, mask, scale)
        out_images.append(image)
        masks.append(mask)
    return Split(tuple(pairs), tuple(out_images), tuple(masks))


def decode_pairs(splits: dict[str, Sequence[Pair]], num_classes: int, spec: DatasetSpec, scale: float = 1.0,
                 where: str = "dataset", resolve: bool = True) -> tuple[dict[str, Split], DatasetSpec]:
    """Decode every split through ``spec``; with ``resolve`` the binary rule sees the values of ALL files.

    Returns the splits (canonical labels: classes 0..C-1 and 255) and the resolved spec.
    """
    tally = ValueTally()
    raw = {name: _read_split(pairs, spec, name, tally) for name, pairs in splits.items()}
    resolved = resolve_spec(spec, tally) if resolve else spec
    refuse_lossy_labels(resolved, tally, where)
    lut = binary_lut(resolved) if resolved is not spec else np.arange(256, dtype=np.uint8)
    tally = tally.remapped(lut)
    training = resolve and "train" in splits  # a training set needs 2 classes; a test folder is scored as it is
    if training:
        require_two_classes(resolved, tally, where)
    out = {name: _finish_split(splits[name], images, labels, lut, num_classes, scale)
           for name, (images, labels) in raw.items()}
    for message in label_warnings(tally, num_classes, where) if training else ():
        warnings.warn(LabelWarning(message), stacklevel=4)
    return out, resolved


def compute_mean_std(
    images: Sequence[torch.Tensor],
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) std on the [0, 1] scale over all pixels.

    Uses exact per-channel 256-bin histograms, so it cannot overflow or lose
    precision.  A constant channel has std 0.
    """
    hist = torch.zeros(3, 256, dtype=torch.int64)
    for img in images:
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected uint8 (3, H, W) images, got {img.dtype} {tuple(img.shape)}")
        for c in range(3):
            hist[c] += torch.bincount(img[c].reshape(-1), minlength=256)
    return _mean_std_from_histogram(hist)


def _mean_std_from_histogram(
    hist: torch.Tensor,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    values = list(range(256))
    means: list[float] = []
    stds: list[float] = []
    for counts in hist.tolist():
        n = sum(counts)
        if n == 0:
            raise ValueError("cannot compute mean/std: no pixels")
        s = sum(v * k for v, k in zip(values, counts))
        ss = sum(v * v * k for v, k in zip(values, counts))
        means.append(s / (n * 255))
        stds.append(math.sqrt((n * ss - s * s) / (n * n)) / 255)  # exact integer variance
    return (means[0], means[1], means[2]), (stds[0], stds[1], stds[2])


# --------------------------------------------------------------------------- loading


def _file_signature(pairs: Sequence[Pair]) -> tuple[tuple[str, int, int], ...]:
    signature: list[tuple[str, int, int]] = []
    for pair in pairs:
        for path in (pair.image, pair.label):
            try:
                st = path.stat()
            except OSError as exc:
                raise UnreadableFileError(f"cannot stat {path}: {exc}") from exc
            signature.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(signature)


_CacheKey = tuple[Path, int, float | None, int | None, float, str]
_CACHE: dict[_CacheKey, tuple[tuple[tuple[str, int, int], ...], SegmentationData]] = {}
_CACHE_LOCK = threading.RLock()


def clear_cache() -> None:
    """Forget every dataset decoded by :func:`load_dataset` in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _build(root: Path, num_classes: int, train: list[Pair], val: list[Pair], spec: DatasetSpec,
           scale: float) -> SegmentationData:
    splits, resolved = decode_pairs({"train": train, "val": val}, num_classes, spec, scale, where=str(root))
    mean, std = compute_mean_std(splits["train"].images)
    return SegmentationData(root, num_classes, splits["train"], splits["val"], mean, std, resolved, scale)


def load_dataset(
    root: str | Path,
    num_classes: int,
    val_fraction: float | None = None,
    split_seed: int = 0,
    scale: float = 1.0,
) -> SegmentationData:
    """Validate, decode and cache the dataset at ``root`` (see the :mod:`seg.data` docstring).

    ``num_classes`` must be in 1..255.  ``val_fraction`` (in (0, 1)) is required
    for the flat images/labels layout and ignored, with a warning, when the root
    has train/ and val/.  Labels are read through ROOT/dataset.toml (or the binary
    rule when there is none; ``SegmentationData.spec`` is the resolved spec).
    ``scale`` in (0, 1] resizes images (antialiased bilinear) and labels (nearest)
    at decode.  Returns the cached object when the same dataset (same arguments,
    dataset.toml and unchanged files) was loaded before in this process.
    """
    _validate_num_classes(num_classes)
    _validate_scale(scale)
    if val_fraction is not None:
        _validate_fraction(val_fraction)
    root_path = _resolve_root(root)
    spec = read_dataset_spec(root_path)
    train, val, used_fraction = _discover(root_path, val_fraction, split_seed, spec)
    key: _CacheKey = (
        root_path,
        int(num_classes),
        float(val_fraction) if used_fraction and val_fraction is not None else None,
        split_seed if used_fraction else None,
        float(scale),
        json.dumps(spec.to_dict(), sort_keys=True),
    )
    signature = _file_signature([*train, *val])
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        data = _build(root_path, int(num_classes), train, val, spec, float(scale))
        _CACHE[key] = (signature, data)
        return data


def load_labelled_folder(root: str | Path, num_classes: int, spec: DatasetSpec | None = None,
                         scale: float = 1.0) -> Split:
    """One labelled folder (a test set) in any accepted layout, decoded to canonical labels (not cached).

    ``spec=None``: ROOT/dataset.toml if present, else the default spec with the binary rule; a given
    spec (the model's stored one) is applied as is, except that a spec which does not describe the
    labels (a default one, e.g. from a checkpoint written before specs) still gets the binary rule
    when the model has 2 classes.  Values outside the classes raise :class:`LabelValueError`
    naming the file.
    """
    _validate_num_classes(num_classes)
    _validate_scale(scale)
    path = _resolve_root(root)
    resolve = spec is None or (not spec.describes_labels and num_classes == 2)
    spec = spec if spec is not None else read_dataset_spec(path)
    pairs = find_labelled_folder(path, spec)
    splits, _ = decode_pairs({"test": pairs}, int(num_classes), spec, float(scale), where=str(path),
                             resolve=resolve)
    return splits["test"]
