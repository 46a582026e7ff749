"""What the label values across a whole dataset say: binary masks, too few classes, stray values, gaps.

The same rules serve `load_dataset` and the planner's survey, so both read a folder the same way:

- binary masks: when dataset.toml does not describe the labels and the values across ALL files are
  exactly {0, 255} or {0, 1}, they are background/foreground (255 -> 1);
- anti-aliased or JPEG 0/255 masks (most pixels at or near 0 or 255, and values just below 255 that
  class indices never use) are thresholded at 128, as people do by hand for such sets (e.g. Kvasir-SEG);
- fewer than 2 classes after that is refused, listing the values found and the keys to set;
- a stray value (held by only a few files, or beyond a gap wider than the values used) is refused
  unless dataset.toml lists the classes, naming the files that hold it;
- a gap in the values and a class in train but absent from val are warned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg.data.dataset_spec import IGNORE, LABEL_KEYS, SPEC_FILE, DatasetSpec
from seg.data.discover import LOSSY_LABEL_SUFFIXES
from seg.data.errors import _MAX_LISTED, LabelFormatError, LabelValueError, _format_paths

# Anti-aliased / JPEG 0/255 masks: at least SOFT_MASK_SHARE of the pixels within SOFT_MASK_NEAR of 0 or
# 255 (JPEG rings near the ends; anti-aliasing adds a thin ramp through the middle), and at least
# SOFT_MASK_MIN_HIGH distinct values just below 255, which class-index labels (0..20 and 255, say) and
# grey-coded ones (0, 128, 255) never use.
SOFT_MASK_NEAR = 32
SOFT_MASK_SHARE = 0.80
SOFT_MASK_MIN_HIGH = 3
SOFT_MASK_THRESHOLD = 128  # values >= 128 are foreground: the midpoint
FEW_FILES_FROM = 10  # the few-files rule needs at least this many label files to judge "few"
FEW_FILES_SHARE = 0.01  # "a few files": at most this share of the files (and at least 1)


@dataclass
class ValueTally:
    """Label values over a dataset, one file at a time: pixels per split, files per value, example files."""

    pixels: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (256,) int64 pixel counts
    files: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))  # value -> files holding it
    examples: dict[int, list[str]] = field(default_factory=dict)  # value -> up to _MAX_LISTED + 1 files
    n_files: int = 0
    lossy: list[str] = field(default_factory=list)  # JPEG label files

    def add(self, split: str, path: str, counts: np.ndarray) -> None:
        """Count one label file's (256,) value histogram."""
        self.pixels.setdefault(split, np.zeros(256, dtype=np.int64))
        self.pixels[split] += counts
        held = np.flatnonzero(counts)
        self.files[held] += 1
        self.n_files += 1
        if path.lower().endswith(LOSSY_LABEL_SUFFIXES):
            self.lossy.append(path)
        for v in held.tolist():
            listed = self.examples.setdefault(v, [])
            if len(listed) <= _MAX_LISTED:
                listed.append(path)

    def total(self) -> np.ndarray:
        return sum(self.pixels.values(), np.zeros(256, dtype=np.int64))

    def values(self, split: str | None = None) -> list[int]:
        """Values with pixels (255, ignore, included), in one split or in all."""
        counts = self.total() if split is None else self.pixels.get(split, np.zeros(256, dtype=np.int64))
        return [int(v) for v in np.flatnonzero(counts)]

    def remapped(self, lut: np.ndarray) -> ValueTally:
        """The tally after mapping every value through a (256,) lookup table."""
        out = ValueTally(n_files=self.n_files, lossy=list(self.lossy))
        for split, counts in self.pixels.items():
            out.pixels[split] = np.bincount(lut, weights=counts, minlength=256).astype(np.int64)
        for v in range(256):
            out.files[lut[v]] += self.files[v]  # an upper bound where two values merge; only used for "few"
            if v in self.examples:
                out.examples.setdefault(int(lut[v]), []).extend(self.examples[v])
        return out


def binary_lut(spec: DatasetSpec) -> np.ndarray:
    """(256,) lookup table of what resolving added to labels decoded by the default spec: 255 -> 1 for
    detected 0/255 masks, the threshold for anti-aliased ones, identity otherwise."""
    if spec.binary and spec.source == "detected":
        return np.array([spec.map_value(v) for v in range(256)], dtype=np.uint8)
    return np.arange(256, dtype=np.uint8)


def soft_binary(tally: ValueTally) -> bool:
    """Anti-aliased or JPEG 0/255 masks: most pixels at or near 0 or 255, several values just below 255."""
    counts = tally.total()
    total = int(counts.sum())
    near_ends = int(counts[:SOFT_MASK_NEAR].sum() + counts[256 - SOFT_MASK_NEAR:].sum())
    just_below = np.count_nonzero(counts[256 - SOFT_MASK_NEAR:IGNORE])
    return (total > 0 and counts[0] > 0 and counts[IGNORE] > 0 and just_below >= SOFT_MASK_MIN_HIGH
            and near_ends / total >= SOFT_MASK_SHARE)


def resolve_spec(spec: DatasetSpec, tally: ValueTally) -> DatasetSpec:
    """The spec with the binary-mask rule applied when dataset.toml does not describe the labels."""
    if spec.describes_labels:
        return spec
    used = set(tally.values())
    if used == {0, IGNORE}:
        return spec.with_binary(remap_255=True)
    if used == {0, 1}:
        return spec.with_binary(remap_255=False)
    if soft_binary(tally):
        return spec.with_binary_threshold(SOFT_MASK_THRESHOLD)
    return spec


def binary_note(spec: DatasetSpec) -> str | None:
    """The one line that says 0/255 (or 0/1) masks were read as background/foreground, and how to change it."""
    if not spec.binary or spec.source != "detected":
        return None
    if spec.binary_threshold is not None:
        return (f"anti-aliased or JPEG binary masks (most pixels at or near 0 or 255, edges in between): values "
                f"below {spec.binary_threshold} are background 0, {spec.binary_threshold} and above foreground 1; "
                f"classes or label_map in ROOT/{SPEC_FILE} read them otherwise")
    if spec.label_map.get(IGNORE) == 1:
        return (f"binary masks (every label holds only 0/255): background 0, foreground 255 -> 1; "
                f"ignore_index = 255 in ROOT/{SPEC_FILE} keeps 255 as ignore")
    return (f"binary masks (every label holds only 0/1): background 0, foreground 1; "
            f"label_map in ROOT/{SPEC_FILE} reads them otherwise")


def _span(values: list[int]) -> str:
    """[0, 1, 2, 3, 5] -> '0-3, 5'."""
    if not values:
        return "none"
    runs, start = [], values[0]
    for prev, cur in zip(values, [*values[1:], None]):
        if cur is None or cur != prev + 1:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(runs)


def require_two_classes(spec: DatasetSpec, tally: ValueTally, where: str) -> None:
    """Refuse labels with fewer than 2 classes (after the spec), listing the values found and the keys."""
    classes = [v for v in tally.values() if v != IGNORE]
    if len(classes) >= 2 or (spec.class_names is not None and len(spec.class_names) >= 2):
        return
    found = _span(tally.values())
    raise LabelValueError(
        f"{where}: the labels hold {len(classes)} class{'' if len(classes) == 1 else 'es'} (values found after "
        f"{spec.source} conventions: {found}; {IGNORE} is ignore); expected at least 2 classes - set ignore_index "
        f"(the value meaning ignore, or \"none\"), label_map (e.g. {{ 255 = 1 }}) or classes in ROOT/{SPEC_FILE}")


def refuse_lossy_labels(spec: DatasetSpec, tally: ValueTally, where: str) -> None:
    """JPEG labels are read only as binary masks (or as dataset.toml describes them): JPEG compression
    smears class indices into neighbouring values, so a JPEG of class indices is refused."""
    described = any(k in spec.keys for k in LABEL_KEYS)
    if not tally.lossy or spec.binary or described:
        return
    raise LabelFormatError(
        f"{where}: {len(tally.lossy)} label file(s) are JPEG, e.g.\n{_format_paths(tally.lossy)}\nJPEG compression "
        f"smears class indices, so JPEG labels are read only as binary 0/255 masks (thresholded at "
        f"{SOFT_MASK_THRESHOLD}); these hold the values {_span(tally.values())}: re-export them as single-channel PNGs "
        f"of class indices (or describe them with classes / label_map in ROOT/{SPEC_FILE})")


def stray_values(spec: DatasetSpec, tally: ValueTally) -> dict[int, str]:
    """{value: why} for values that look like strays rather than classes (none when the classes are listed)."""
    if spec.class_names is not None:
        return {}
    values = [v for v in tally.values() if v != IGNORE]
    out: dict[int, str] = {}
    for below, above in zip(values, values[1:]):
        gap = above - below - 1
        if gap > len(values):  # e.g. 0-2 then 37: a gap of 34 values beside 4 used
            for v in values[values.index(above):]:
                out[v] = (f"beyond a gap of {gap} unused values ({below + 1}-{above - 1}), wider than the "
                          f"{len(values)} values used")
            break
    if tally.n_files >= FEW_FILES_FROM:
        few = max(1, int(tally.n_files * FEW_FILES_SHARE))
        for v in values:
            if v not in out and v != 0 and tally.files[v] <= few:
                out[v] = f"held by only {int(tally.files[v])} of {tally.n_files} label files"
    return out


def refuse_strays(spec: DatasetSpec, tally: ValueTally, where: str) -> None:
    """LabelValueError naming each stray value, why, and the files that hold it."""
    strays = stray_values(spec, tally)
    if not strays:
        return
    parts = [f"value {v} is {why}; files holding it:\n{_format_paths(tally.examples.get(v, []))}"
             for v, why in sorted(strays.items())]
    raise LabelValueError(
        f"{where}: label values that look like strays rather than classes (values used: "
        f"{_span([v for v in tally.values() if v != IGNORE])}):\n" + "\n".join(parts) +
        f"\nfix or remove those labels, map the value with label_map (e.g. {{ {max(strays)} = {IGNORE} }} to ignore "
        f"it), or list the classes in ROOT/{SPEC_FILE} (classes = [...]) to say they are real")


def label_warnings(tally: ValueTally, num_classes: int, where: str) -> list[str]:
    """A gap in the class values, and classes in train but absent from val, said in words."""
    out = []
    used = {v for v in tally.values() if v != IGNORE}
    missing = sorted(set(range(num_classes)) - used)
    if missing:
        more = len(missing) - _MAX_LISTED
        listed = f"{missing[:_MAX_LISTED]}" + (f" and {more} more" if more > 0 else "")
        out.append(f"{where}: the label values skip {listed} (values used: {_span(sorted(used))}); those "
                   "classes have no pixels, so they cannot be learned and their IoU is undefined")
    if "val" in tally.pixels:
        absent = sorted(set(tally.values("train")) - set(tally.values("val")) - {IGNORE})
        if absent:
            out.append(f"{where}: class(es) {_span(absent)} appear in train but not in val; the val mIoU is the mean "
                       "over classes present in the val labels or predictions, so they only count (as IoU 0) "
                       "where the model wrongly predicts them")
    return out
