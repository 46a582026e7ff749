"""Folder segmentation datasets: discovery, validation, decoding and caching.

Layout
------
A dataset root uses one of two layouts::

    ROOT/train/images/*.{jpg,jpeg,png}    ROOT/images/*.{jpg,jpeg,png}
    ROOT/train/labels/*.png               ROOT/labels/*.png
    ROOT/val/images/...                   (split into train/val with
    ROOT/val/labels/...                    ``val_fraction``)

Images and labels are paired by file stem (``a.jpg`` <-> ``a.png``).  Image
suffixes are matched case-insensitively.  Labels are single-channel PNGs whose
pixel values are class indices ``0..num_classes-1``; ``255`` (``IGNORE_INDEX``)
marks pixels to ignore.  When the root has ``train/`` and ``val/`` that split is
used (a ``val_fraction`` is then ignored with a warning); the flat
``images/``+``labels/`` layout needs ``val_fraction``, and its split is
deterministic: stems are ranked by a SHA-256 hash of ``(split_seed, stem)``, so
the same stems always go to val and adding a file moves few others.

Validation
----------
Everything is validated once, in :func:`load_dataset`, before any training.
Every problem raises a subclass of :class:`DatasetError` (itself a
``ValueError``) whose message names the offending file(s) by full path and says
what was expected:

* :class:`MissingDirectoryError` - a directory (or the whole layout) is missing;
* :class:`EmptyDirectoryError` - a directory holds no usable image files;
* :class:`UnpairedFileError` - images without labels / labels without images;
* :class:`DuplicateStemError` - two files share a stem (``a.jpg`` and ``a.png``);
* :class:`SizeMismatchError` - a label's size differs from its image's;
* :class:`LabelValueError` - label values ``>= num_classes`` other than 255;
* :class:`LabelFormatError` - a label that is not a PNG, or a colour label;
* :class:`UnreadableFileError` - a zero-byte, truncated or corrupt file.

Hidden files (``.name``), sub-directories and files with other suffixes
(``Thumbs.db``, ``notes.txt``) are skipped with one :class:`IgnoredFileWarning`
per directory listing them.

Normalisation
-------------
Images: the EXIF orientation is applied first (``ImageOps.exif_transpose``),
then the image is converted to RGB.  Grayscale is replicated to three channels,
palette images are expanded, CMYK is converted by Pillow, and for RGBA/LA the
alpha channel is dropped (the colour values are kept as stored, not composited).
16-bit grayscale images are scaled to 8 bits.

Labels: EXIF orientation is applied as for images (a no-op for ordinary PNGs),
so a label must match its image's *displayed* size.  Mode ``L`` is used as is;
mode ``P`` uses the raw palette indices as classes (VOC style); 16/32-bit
integer modes are accepted when every value is valid and narrowed to uint8;
``RGB``/``RGBA``/``LA``/``PA`` are accepted only when all colour channels are
equal and the alpha is fully opaque; mode ``1`` becomes 0/1.

Caching
-------
Decoded images/labels are held in memory as uint8 tensors.  :func:`load_dataset`
keeps a process-level cache keyed by (resolved root, num_classes, val_fraction,
split_seed) and validated against a signature of the paired files (paths,
sizes, mtimes), so loading the same dataset twice returns the same
:class:`SegmentationData` object without decoding again; changed files cause a
reload.  The cached tensors are shared: treat them as read-only (transforms must
not modify them in place).  :func:`clear_cache` empties the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "DatasetError",
    "DuplicateStemError",
    "EmptyDirectoryError",
    "IgnoredFileWarning",
    "LabelFormatError",
    "LabelValueError",
    "MissingDirectoryError",
    "Pair",
    "SegmentationData",
    "SizeMismatchError",
    "Split",
    "UnpairedFileError",
    "UnreadableFileError",
    "clear_cache",
    "compute_mean_std",
    "decode_image",
    "decode_label",
    "find_pairs",
    "load_dataset",
    "split_pairs",
]

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".png"

_MAX_LISTED = 10
_EXIF_ORIENTATION_TAG = 0x0112
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA"})
# UnidentifiedImageError is an OSError; Pillow raises SyntaxError/ValueError/
# EOFError for some corrupt headers and DecompressionBombError for huge files.
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)
_LAYOUT_HELP = (
    "expected either ROOT/train/images, ROOT/train/labels, ROOT/val/images and "
    "ROOT/val/labels, or ROOT/images and ROOT/labels together with a val_fraction"
)


class DatasetError(ValueError):
    """Base class of every dataset validation error."""


class MissingDirectoryError(DatasetError):
    """A required directory (or the whole expected layout) does not exist."""


class EmptyDirectoryError(DatasetError):
    """A directory exists but holds no usable files."""


class UnpairedFileError(DatasetError):
    """Images without a label or labels without an image."""


class DuplicateStemError(DatasetError):
    """Several files in one directory share a stem (e.g. a.jpg and a.png)."""


class SizeMismatchError(DatasetError):
    """A label's width/height differ from its image's (displayed) size."""


class LabelValueError(DatasetError):
    """A label holds values that are neither class indices nor IGNORE_INDEX."""


class LabelFormatError(DatasetError):
    """A label file whose format cannot be converted to class indices unambiguously."""


class UnreadableFileError(DatasetError):
    """A zero-byte, truncated or otherwise undecodable file."""


class IgnoredFileWarning(UserWarning):
    """Hidden or non-image files were skipped during discovery."""


@dataclass(frozen=True)
class Pair:
    """One image and its label, matched by file stem."""

    stem: str
    image: Path
    label: Path


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


# --------------------------------------------------------------------------- helpers


def _format_paths(paths: Sequence[Path | str], limit: int = _MAX_LISTED) -> str:
    """One path per indented line, capped at ``limit`` with a count of the rest."""
    lines = [f"  {p}" for p in paths[:limit]]
    if len(paths) > limit:
        lines.append(f"  ... and {len(paths) - limit} more")
    return "\n".join(lines)


def _validate_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"num_classes must be an int in 1..255, got {num_classes!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(
            f"num_classes must be in 1..255 (255 is reserved for ignore), got {num_classes}"
        )


def _validate_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise ValueError(f"val_fraction must be a float in (0, 1), got {val_fraction!r}")
    if not (math.isfinite(val_fraction) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")


def _check_directory(path: Path, what: str) -> None:
    if not path.exists():
        raise MissingDirectoryError(f"{what} directory {path} does not exist")
    if not path.is_dir():
        raise MissingDirectoryError(f"{path} is not a directory; expected the {what} directory")


def _is_candidate(path: Path) -> bool:
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
    )


def _scan_directory(directory: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group image-suffixed files by stem; return them and the ignored entries."""
    by_stem: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    for path in sorted(directory.iterdir()):
        if _is_candidate(path):
            by_stem.setdefault(path.stem, []).append(path)
        else:
            ignored.append(path)
    return by_stem, ignored


def _warn_ignored(directory: Path, ignored: list[Path]) -> None:
    if ignored:
        warnings.warn(
            IgnoredFileWarning(
                f"ignoring {len(ignored)} hidden or non-image "
                f"entr{'y' if len(ignored) == 1 else 'ies'} "
                f"in {directory} (only {', '.join(IMAGE_SUFFIXES)} files are used):\n"
                f"{_format_paths(ignored)}"
            ),
            stacklevel=4,
        )


def _raise_duplicates(directory: Path, by_stem: dict[str, list[Path]]) -> None:
    groups = [paths for paths in by_stem.values() if len(paths) > 1]
    if groups:
        listed = [" and ".join(str(p) for p in paths) for paths in groups]
        raise DuplicateStemError(
            f"{len(groups)} stem(s) in {directory} belong to several files, so pairing is "
            f"ambiguous; keep exactly one file per stem:\n{_format_paths(listed)}"
        )


def _collect_files(directory: Path, what: str) -> dict[str, Path]:
    """Validated ``{stem: path}`` of one images/labels directory."""
    _check_directory(directory, what)
    by_stem, ignored = _scan_directory(directory)
    _warn_ignored(directory, ignored)
    if not by_stem:
        detail = f" ({len(ignored)} other entries were ignored)" if ignored else ""
        raise EmptyDirectoryError(
            f"{what} directory {directory} contains no {'/'.join(IMAGE_SUFFIXES)} files{detail}"
        )
    _raise_duplicates(directory, by_stem)
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _raise_unpaired(
    images_dir: Path, labels_dir: Path, images: dict[str, Path], labels: dict[str, Path]
) -> None:
    no_label = [
        f"{images[s]} (expected {labels_dir / (s + LABEL_SUFFIX)})"
        for s in sorted(images.keys() - labels.keys())
    ]
    no_image = [str(labels[s]) for s in sorted(labels.keys() - images.keys())]
    if not no_label and not no_image:
        return
    parts = [
        f"{len(no_label) + len(no_image)} unpaired file(s): every image in {images_dir} needs a "
        f"label with the same stem in {labels_dir} and vice versa"
    ]
    if no_label:
        parts.append(f"{len(no_label)} image(s) without a label:\n{_format_paths(no_label)}")
    if no_image:
        parts.append(f"{len(no_image)} label(s) without an image:\n{_format_paths(no_image)}")
    raise UnpairedFileError("\n".join(parts))


# --------------------------------------------------------------------------- discovery


def find_pairs(images_dir: Path, labels_dir: Path) -> list[Pair]:
    """Discover and pair image/label files by stem, sorted by stem.

    Hidden and non-image entries are skipped with an :class:`IgnoredFileWarning`
    per directory.  Raises :class:`MissingDirectoryError`,
    :class:`EmptyDirectoryError`, :class:`DuplicateStemError` or
    :class:`UnpairedFileError`.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    images = _collect_files(images_dir, "images")
    labels = _collect_files(labels_dir, "labels")
    _raise_unpaired(images_dir, labels_dir, images, labels)
    return [Pair(stem, images[stem], labels[stem]) for stem in sorted(images)]


def _stem_rank(stem: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{stem}".encode()).digest()


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Deterministically split ``pairs`` into ``(train, val)``, each sorted by stem.

    Stems are ranked by SHA-256 of ``(seed, stem)`` and the first
    ``round(len * val_fraction)`` (at least 1, leaving at least 1 for train) go
    to val, so the result does not depend on input order or Python's hash seed.
    Raises ``ValueError`` if ``val_fraction`` is not in (0, 1) and
    :class:`DatasetError` if there are fewer than 2 pairs.
    """
    _validate_fraction(val_fraction)
    if len(pairs) < 2:
        raise DatasetError(
            f"cannot split {len(pairs)} image/label pair(s) into train and val; need at least 2"
        )
    n_val = min(max(int(len(pairs) * val_fraction + 0.5), 1), len(pairs) - 1)
    ranked = sorted(pairs, key=lambda p: (_stem_rank(p.stem, seed), p.stem, str(p.image)))
    val_ids = {id(p) for p in ranked[:n_val]}
    ordered = sorted(pairs, key=lambda p: (p.stem, str(p.image)))
    return [p for p in ordered if id(p) not in val_ids], [p for p in ordered if id(p) in val_ids]


# --------------------------------------------------------------------------- decoding


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make sure Pillow raises on truncated files even if someone enabled tolerance."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _open_fully(path: Path) -> tuple[Image.Image, str | None]:
    """Fully decode ``path`` in its displayed (EXIF) orientation; return it and its format."""
    if path.is_file() and path.stat().st_size == 0:
        raise UnreadableFileError(f"{path} is empty (0 bytes); re-export or remove it")
    try:
        with _strict_decoding(), Image.open(path) as img:
            img.load()  # full decode: detects truncation
            image_format = img.format
            oriented = ImageOps.exif_transpose(img)
    except _PIL_ERRORS as exc:
        raise UnreadableFileError(
            f"cannot read {path}: {type(exc).__name__}: {exc}; the file is truncated, corrupt or "
            "not an image - re-export or remove it"
        ) from exc
    assert oriented is not None  # only None with in_place=True
    return oriented, image_format


def _rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array; alpha is dropped, 16-bit gray is scaled to 8 bits."""
    if img.mode in _WIDE_INT_MODES:
        gray = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" or img.mode in _ALPHA_MODES:
        img = img.convert("RGBA")  # expands palettes (incl. transparency) uniformly
    return np.array(img.convert("RGB"), dtype=np.uint8)


def decode_image(path: Path) -> torch.Tensor:
    """Decode an image to a uint8 ``(3, H, W)`` RGB tensor in its displayed orientation.

    Raises :class:`UnreadableFileError` for zero-byte, truncated or corrupt files.
    """
    img, _ = _open_fully(Path(path))
    return torch.from_numpy(_rgb_array(img)).permute(2, 0, 1).contiguous()


def _require_opaque(alpha: np.ndarray, path: Path) -> None:
    if not bool((alpha == 255).all()):
        raise LabelFormatError(
            f"label {path} has transparent pixels; alpha cannot encode classes - expected a "
            "single-channel PNG of class indices (mode L) or a palette PNG (mode P)"
        )


def _gray_from_colour(arr: np.ndarray, path: Path, mode: str) -> np.ndarray:
    if not bool((arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all()):
        raise LabelFormatError(
            f"label {path} is a colour ({mode}) image whose channels differ; a colour label is "
            "ambiguous (no colour-to-class mapping is known) - expected a single-channel PNG of "
            "class indices (mode L) or a palette PNG (mode P) whose indices are the classes"
        )
    return arr[:, :, 0]


def _label_array(img: Image.Image, path: Path) -> np.ndarray:
    """Class-index array of a label image (uint8, or wider ints for 16/32-bit modes)."""
    mode = img.mode
    if mode in ("L", "P") or mode in _WIDE_INT_MODES:
        return np.array(img)
    if mode == "1":
        return np.array(img).astype(np.uint8)
    if mode in ("LA", "PA"):
        arr = np.array(img)
        _require_opaque(arr[:, :, 1], path)
        return arr[:, :, 0]
    if mode in ("RGB", "RGBA"):
        arr = np.array(img)
        if mode == "RGBA":
            _require_opaque(arr[:, :, 3], path)
        return _gray_from_colour(arr, path, mode)
    raise LabelFormatError(
        f"label {path} has unsupported image mode {mode!r}; expected a single-channel PNG of "
        "class indices (mode L) or a palette PNG (mode P)"
    )


def _check_label_values(arr: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    """Return ``arr`` as uint8 after checking it only holds classes or IGNORE_INDEX."""
    if arr.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        present = np.unique(arr)
    bad = present[((present < 0) | (present >= num_classes)) & (present != IGNORE_INDEX)]
    if bad.size:
        values = [int(v) for v in bad[:_MAX_LISTED]]
        more = f" (and {bad.size - _MAX_LISTED} more)" if bad.size > _MAX_LISTED else ""
        relation = (
            f">= num_classes={num_classes}"
            if bad.min() >= 0
            else f"outside 0..{num_classes - 1} (num_classes={num_classes})"
        )
        raise LabelValueError(
            f"label {path} has values {values}{more} {relation}; expected class indices "
            f"0..{num_classes - 1}, or {IGNORE_INDEX} for ignore"
        )
    return np.ascontiguousarray(arr, dtype=np.uint8)


def decode_label(path: Path, num_classes: int) -> torch.Tensor:
    """Decode and validate a label PNG to a uint8 ``(H, W)`` tensor of class indices.

    Raises :class:`LabelFormatError` (not a PNG, colour or transparent label),
    :class:`LabelValueError` (values >= num_classes other than 255) or
    :class:`UnreadableFileError`.
    """
    path = Path(path)
    _validate_num_classes(num_classes)
    if path.suffix.lower() != LABEL_SUFFIX:
        raise LabelFormatError(
            f"label {path} is not a PNG; labels must be lossless PNGs of class indices "
            "(JPEG compression corrupts class indices) - re-export it as a single-channel PNG"
        )
    img, image_format = _open_fully(path)
    if image_format != "PNG":
        raise LabelFormatError(
            f"label {path} is named .png but is a {image_format} file; labels must be lossless "
            "single-channel PNGs of class indices"
        )
    arr = _check_label_values(_label_array(img, path), path, num_classes)
    return torch.from_numpy(arr)


def _exif_orientation(path: Path) -> int | None:
    try:
        with Image.open(path) as img:
            value = img.getexif().get(_EXIF_ORIENTATION_TAG)
    except _PIL_ERRORS:
        return None
    return int(value) if value is not None else None


def _check_sizes(pair: Pair, image: torch.Tensor, mask: torch.Tensor) -> None:
    ih, iw = image.shape[1:]
    lh, lw = mask.shape
    if (ih, iw) == (lh, lw):
        return
    hint = ""
    orientation = _exif_orientation(pair.image)
    if orientation is not None and orientation != 1:
        hint = (
            f" (the image has EXIF orientation {orientation}; its size is taken after applying it, "
            "so the label must be in the displayed orientation)"
        )
    raise SizeMismatchError(
        f"label {pair.label} is {lw}x{lh} (WxH) but its image {pair.image} is {iw}x{ih}{hint}; "
        "a label must have exactly the same size as its image"
    )


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


def _resolve_root(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise MissingDirectoryError(f"dataset root {path} does not exist; {_LAYOUT_HELP}")
    if not path.is_dir():
        raise MissingDirectoryError(f"dataset root {path} is not a directory; {_LAYOUT_HELP}")
    return path


def _no_layout_error(root: Path) -> DatasetError:
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return EmptyDirectoryError(f"dataset root {root} is empty; {_LAYOUT_HELP}")
    shown = ", ".join(entries[:_MAX_LISTED]) + (" ..." if len(entries) > _MAX_LISTED else "")
    return MissingDirectoryError(
        f"dataset root {root} has neither train/ and val/ nor images/ and labels/ "
        f"(found: {shown}); {_LAYOUT_HELP}"
    )


def _discover_train_val(root: Path, val_fraction: float | None) -> tuple[list[Pair], list[Pair]]:
    if val_fraction is not None:
        warnings.warn(
            f"{root} already has train/ and val/; ignoring val_fraction={val_fraction}",
            stacklevel=4,
        )
    if (root / "images").exists() or (root / "labels").exists():
        warnings.warn(
            f"{root} has train/ and val/; ignoring {root / 'images'} and {root / 'labels'}",
            stacklevel=4,
        )
    _check_directory(root / "train", "train split")
    _check_directory(root / "val", "val split")
    train = find_pairs(root / "train" / "images", root / "train" / "labels")
    val = find_pairs(root / "val" / "images", root / "val" / "labels")
    return train, val


def _discover(
    root: Path, val_fraction: float | None, split_seed: int
) -> tuple[list[Pair], list[Pair], bool]:
    """Return (train pairs, val pairs, whether val_fraction was used)."""
    if (root / "train").exists() or (root / "val").exists():
        train, val = _discover_train_val(root, val_fraction)
        return train, val, False
    if (root / "images").exists() or (root / "labels").exists():
        if val_fraction is None:
            raise MissingDirectoryError(
                f"dataset root {root} has images/ and labels/ but no train/ and val/; pass "
                "val_fraction (e.g. val_fraction=0.2) to split it, or arrange the files as "
                "ROOT/train/{images,labels} and ROOT/val/{images,labels}"
            )
        pairs = find_pairs(root / "images", root / "labels")
        train, val = split_pairs(pairs, val_fraction, split_seed)
        return train, val, True
    raise _no_layout_error(root)


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
    """Validate, decode and cache the dataset at ``root`` (see the module docstring).

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
