"""Decoding images to RGB tensors and labels to validated class-index tensors.

See the "Normalisation" section of the :mod:`seg.data` docstring for how image
and label modes are converted.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from seg.data.colour_labels import map_colours, refuse_colour_label
from seg.data.dataset_spec import LABEL_KEYS, SPEC_FILE, DatasetSpec
from seg.data.discover import LABEL_SUFFIX, LOSSY_LABEL_SUFFIXES, Pair
from seg.data.errors import (
    _MAX_LISTED,
    ImageTooLargeError,
    LabelFormatError,
    LabelValueError,
    SizeMismatchError,
    UnreadableFileError,
)

IGNORE_INDEX = 255  # the label value every loss, metric, pad and fill ignores; defined here only

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


def _validate_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"num_classes must be an int in 1..255, got {num_classes!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(
            f"num_classes must be in 1..255 (255 is reserved for ignore), got {num_classes}"
        )


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
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from exc
    except _PIL_ERRORS as exc:
        raise UnreadableFileError(
            f"cannot read {path}: {type(exc).__name__}: {exc}; the file is truncated, corrupt or "
            "not an image - re-export or remove it"
        ) from exc
    assert oriented is not None  # only None with in_place=True
    return oriented, image_format


def _too_large(path: Path, exc: Exception) -> ImageTooLargeError:
    """Pillow's decompression-bomb refusal, said as what it is: an image too large, not a corrupt one."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "over Pillow's limit"
    limit = Image.MAX_IMAGE_PIXELS
    cap = f" (Pillow refuses images over {2 * limit / 1e6:.1f} megapixels)" if limit else ""
    return ImageTooLargeError(
        f"{path} is too large ({size}){cap}, which Pillow treats as a possible decompression bomb; resize "
        "it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file")


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
        raise refuse_colour_label(arr[:, :, :3], path, mode)
    return arr[:, :, 0]


def _colour_array(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) RGB of a label read through a colour table (palette and opaque alpha accepted)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.array(img.convert("RGBA"))
        _require_opaque(rgba[:, :, 3], path)
        return rgba[:, :, :3]
    return np.array(img.convert("RGB"))


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
            f"0..{num_classes - 1}, or {IGNORE_INDEX} for ignore (ignore_index and label_map in "
            f"ROOT/{SPEC_FILE} say how other values are read)"
        )
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _open_label(path: Path) -> Image.Image:
    # JPEG labels are opened too: binary 0/255 masks often come as JPEGs (Kvasir-SEG); the dataset-wide
    # rules (seg.data.conventions.refuse_lossy_labels) accept them only as binary masks.
    expected = "JPEG" if path.suffix.lower() in LOSSY_LABEL_SUFFIXES else "PNG"
    if expected == "PNG" and path.suffix.lower() != LABEL_SUFFIX:
        raise LabelFormatError(
            f"label {path} is not a PNG; labels must be lossless PNGs of class indices "
            "(or binary 0/255 masks as JPEG) - re-export it as a single-channel PNG"
        )
    img, image_format = _open_fully(path)
    if image_format != expected:
        raise LabelFormatError(
            f"label {path} is named {path.suffix} but is a {image_format} file; labels must be lossless "
            "single-channel PNGs of class indices (or binary 0/255 masks as JPEG)"
        )
    return img


def _map_values(arr: np.ndarray, spec: DatasetSpec, path: Path) -> np.ndarray:
    """File values -> class indices / 255 by ``label_map`` then ``ignore_index``; uint8 out."""
    values = np.unique(arr) if arr.dtype != np.uint8 else np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    unmapped_255 = IGNORE_INDEX in values and IGNORE_INDEX not in spec.label_map
    if unmapped_255 and spec.ignore_index != IGNORE_INDEX:
        said = '"none"' if spec.ignore_index is None else str(spec.ignore_index)
        raise LabelValueError(
            f"label {path} has value {IGNORE_INDEX}, but ignore_index is {said} in {spec.source}, so "
            f"{IGNORE_INDEX} is neither ignore nor a class (at most 255 classes, 0..254); map it with "
            f"label_map = {{ {IGNORE_INDEX} = N }} (a class) or {{ {IGNORE_INDEX} = {IGNORE_INDEX} }} (ignore)")
    mapped = np.array([spec.map_value(int(v)) for v in values], dtype=np.int64)
    bad = values[(mapped < 0) | (mapped > IGNORE_INDEX)]
    if bad.size:
        raise LabelValueError(
            f"label {path} has values {[int(v) for v in bad[:_MAX_LISTED]]} outside 0..{IGNORE_INDEX}; expected "
            f"class indices 0..254 or {IGNORE_INDEX} for ignore - map them with label_map in ROOT/{SPEC_FILE}")
    if arr.dtype == np.uint8 and bool((mapped == values).all()):
        return arr
    if arr.dtype == np.uint8:
        lut = np.arange(256, dtype=np.uint8)
        lut[values] = mapped
        return lut[arr]
    return mapped[np.searchsorted(values, arr)].astype(np.uint8)


def read_label(path: Path, spec: DatasetSpec | None = None) -> np.ndarray:
    """A label PNG read through ``spec`` (colour table, ``label_map``, ``ignore_index``): uint8 ``(H, W)``.

    Values are class indices or 255 (ignore) but not yet checked against a class count.  Raises
    :class:`LabelFormatError`, :class:`LabelValueError` or :class:`UnreadableFileError`.
    """
    path, spec = Path(path), spec or DatasetSpec()
    img = _open_label(path)
    if spec.class_colors is not None:
        arr = map_colours(_colour_array(img, path), spec, path)
        # colour positions are already class indices; only label_map applies to them (merges, ignore)
        return _map_values(arr, DatasetSpec(label_map=spec.label_map, source=spec.source), path)
    return _map_values(_label_array(img, path), spec, path)


def decode_label(path: Path, num_classes: int, spec: DatasetSpec | None = None) -> torch.Tensor:
    """Decode and validate a label PNG to a uint8 ``(H, W)`` tensor of class indices (255: ignore).

    ``spec`` (default: values are classes, 255 is ignore) says how the file encodes them.
    Raises :class:`LabelFormatError` (not a PNG, colour or transparent label),
    :class:`LabelValueError` (values >= num_classes other than 255) or
    :class:`UnreadableFileError`.
    """
    path, spec = Path(path), spec or DatasetSpec()
    _validate_num_classes(num_classes)
    if path.suffix.lower() in LOSSY_LABEL_SUFFIXES and not (spec.binary or any(k in spec.keys for k in LABEL_KEYS)):
        raise LabelFormatError(
            f"label {path} is a JPEG; JPEG compression smears class indices, so JPEG labels are read only as "
            "binary 0/255 masks (load_dataset detects them across a dataset) or as ROOT/dataset.toml describes "
            "them - re-export it as a single-channel PNG"
        )
    arr = _check_label_values(read_label(path, spec), path, num_classes)
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
