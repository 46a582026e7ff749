"""Decoded datasets in memory: splits, mean/std, and the process-level cache of :func:`load_dataset`."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from seg.data.decode import _check_sizes, _validate_num_classes, decode_image, decode_label
from seg.data.discover import Pair
from seg.data.errors import UnreadableFileError
from seg.data.layout import _discover, _resolve_root, _validate_fraction


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


def _decode_split(pairs: Sequence[Pair], num_classes: int) -> Split:
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for pair in pairs:
        image = decode_image(pair.image)
        mask = decode_label(pair.label, num_classes)
        _check_sizes(pair, image, mask)
        images.append(image)
        masks.append(mask)
    return Split(tuple(pairs), tuple(images), tuple(masks))


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


_CacheKey = tuple[Path, int, float | None, int | None]
_CACHE: dict[_CacheKey, tuple[tuple[tuple[str, int, int], ...], SegmentationData]] = {}
_CACHE_LOCK = threading.RLock()


def clear_cache() -> None:
    """Forget every dataset decoded by :func:`load_dataset` in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _build(root: Path, num_classes: int, train: list[Pair], val: list[Pair]) -> SegmentationData:
    train_split = _decode_split(train, num_classes)
    val_split = _decode_split(val, num_classes)
    mean, std = compute_mean_std(train_split.images)
    return SegmentationData(root, num_classes, train_split, val_split, mean, std)


def load_dataset(
    root: str | Path,
    num_classes: int,
    val_fraction: float | None = None,
    split_seed: int = 0,
) -> SegmentationData:
    """Validate, decode and cache the dataset at ``root`` (see the :mod:`seg.data` docstring).

    ``num_classes`` must be in 1..255.  ``val_fraction`` (in (0, 1)) is required
    for the flat images/labels layout and ignored, with a warning, when the root
    has train/ and val/.  Returns the cached object when the same dataset (same
    arguments and unchanged files) was loaded before in this process.
    """
    _validate_num_classes(num_classes)
    if val_fraction is not None:
        _validate_fraction(val_fraction)
    root_path = _resolve_root(root)
    train, val, used_fraction = _discover(root_path, val_fraction, split_seed)
    key: _CacheKey = (
        root_path,
        int(num_classes),
        float(val_fraction) if used_fraction and val_fraction is not None else None,
        split_seed if used_fraction else None,
    )
    signature = _file_signature([*train, *val])
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        data = _build(root_path, int(num_classes), train, val)
        _CACHE[key] = (signature, data)
        return data
