"""Colour-coded label PNGs (CamVid, Cityscapes' colour files): RGB -> class index through dataset.toml's table.

Each colour of `classes = [{ name = ..., color = [r, g, b] }, ...]` decodes to its position among the
classes; colours marked `ignore = true` decode to 255. Any other colour is refused, listing the
commonest colours of the file so the table can be completed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.data.dataset_spec import IGNORE, SPEC_FILE, Color, DatasetSpec
from seg.data.errors import LabelFormatError, LabelValueError

_LISTED_COLOURS = 10
_TABLE_HINT = (f'describe them in ROOT/{SPEC_FILE} with classes = [{{ name = "road", color = [128, 64, 128] }}, ...] '
               '(and { color = [r, g, b], ignore = true } for a colour to ignore)')


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 codes r<<16 | g<<8 | b (24 bits; int32 keeps 12-MP labels small)."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)


def _as_rgb(code: int) -> Color:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def commonest_colours(codes: np.ndarray, n: int = _LISTED_COLOURS) -> str:
    """'[128, 64, 128] (41.2 %), [0, 0, 0] (30.0 %), ...' for the n commonest colours."""
    values, counts = np.unique(codes.ravel(), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:n]
    total = max(int(counts.sum()), 1)
    listed = ", ".join(f"{list(_as_rgb(int(values[i])))} ({100 * counts[i] / total:.1f} %)" for i in order)
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return f"{len(values)} colours: {listed}{more}"


def refuse_colour_label(rgb: np.ndarray, path: Path, mode: str) -> LabelFormatError:
    """The error for an RGB label whose channels differ while no colour table is known."""
    return LabelFormatError(
        f"label {path} is a colour ({mode}) image whose channels differ; a colour label is ambiguous (no "
        f"colour-to-class mapping is known) - it has {commonest_colours(colour_codes(rgb))}; {_TABLE_HINT}, "
        "or re-export the labels as single-channel PNGs of class indices (mode L) or palette PNGs (mode P)"
    )


def map_colours(rgb: np.ndarray, spec: DatasetSpec, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 class positions (255 for ignore colours); unknown colours refused."""
    assert spec.class_colors is not None
    table = [*spec.class_colors, *spec.ignore_colors]
    targets = np.array([*range(len(spec.class_colors)), *[IGNORE] * len(spec.ignore_colors)], dtype=np.int64)
    table_codes = np.array([(r << 16) | (g << 8) | b for r, g, b in table], dtype=np.int32)
    order = np.argsort(table_codes)
    sorted_codes, sorted_targets = table_codes[order], targets[order]
    codes = colour_codes(rgb)
    at = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    known = sorted_codes[at] == codes
    if not bool(known.all()):
        raise LabelValueError(
            f"label {path} has colours that are not in the colour table of {spec.source}: "
            f"{commonest_colours(codes[~known])}; add them to classes (with a name, or ignore = true), "
            f"or fix the label - {_TABLE_HINT}")
    return sorted_targets[at].astype(np.uint8)
