"""Dataset root layouts: ``train/`` + ``val/`` folders, or a flat folder split by ``val_fraction``.

The flat split is deterministic: stems are ranked by a SHA-256 hash of
``(split_seed, stem)``, so the same stems always go to val.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from seg.data.dataset_spec import SPEC_FILE, DatasetSpec, read_dataset_spec
from seg.data.discover import Pair, _check_directory, find_pairs
from seg.data.errors import _MAX_LISTED, DatasetError, EmptyDirectoryError, MissingDirectoryError

IMAGE_DIRS = ("images", "image", "imgs", "img")
LABEL_DIRS = ("labels", "label", "masks", "mask", "annotations", "annotation", "gt")
TRAIN_DIRS = ("train", "training")
VAL_DIRS = ("val", "valid", "validation")
TEST_DIRS = ("test", "testing")
ANNOT = "annot"  # side-by-side folders: train/ + trainannot/ (SegNet's CamVid)

_LAYOUT_HELP = (
    "expected either ROOT/train/images, ROOT/train/labels, ROOT/val/images and "
    "ROOT/val/labels, or ROOT/images and ROOT/labels together with a val_fraction "
    f"(also accepted: {'/, '.join(IMAGE_DIRS)}/ for images; {'/, '.join(LABEL_DIRS)}/ for labels; "
    "side-by-side train/ + trainannot/ and val/ + valannot/); other folder names and label file "
    f"names are set in ROOT/{SPEC_FILE} with images = \"...\", labels = \"...\" and label_suffix = \"_mask\""
)


@dataclass(frozen=True)
class Folders:
    """One images folder and its labels folder."""

    images: Path
    labels: Path


def _first_dir(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _names(named: str | None, usual: tuple[str, ...]) -> tuple[str, ...]:
    """The folder name dataset.toml gives, else the usual ones."""
    return (named,) if named else usual


def _only_dir(folder: Path, named: str | None, usual: tuple[str, ...], key: str) -> Path | None:
    """The folder dataset.toml names, else the one usual name present; two usual names present (CWFID ships
    masks/ of plant versus soil beside annotations/ of crop versus weed) are refused, not guessed."""
    found = [folder / n for n in _names(named, usual) if (folder / n).is_dir()]
    if len(found) > 1:
        names = ", ".join(f"{p.name}/" for p in found)
        options = " or ".join(f'{key} = "{p.name}"' for p in found)
        raise DatasetError(f"{folder} has {len(found)} folders that could hold the {key} ({names}); say which "
                           f"with {options} in the dataset root's {SPEC_FILE}")
    return found[0] if found else None


def pair_in(folder: Path, spec: DatasetSpec) -> Folders | None:
    """The images/labels folders directly inside ``folder`` (names from the spec, else the usual ones)."""
    images = _only_dir(folder, spec.images, IMAGE_DIRS, "images")
    labels = _only_dir(folder, spec.labels, LABEL_DIRS, "labels")
    return Folders(images, labels) if images and labels else None


def pairs_of(folders: Folders, spec: DatasetSpec) -> list[Pair]:
    """The image/label pairs of one images folder and its labels folder, named as the spec says."""
    return find_pairs(folders.images, folders.labels, spec.label_suffix, spec.image_suffix)


def split_folders(root: Path, names: tuple[str, ...], spec: DatasetSpec) -> Folders | None:
    """A split's folders: ROOT/<split>/{images,labels}, or side by side ROOT/<split> + ROOT/<split>annot."""
    for name in names:
        folder = root / name
        if not folder.is_dir():
            continue
        inner = pair_in(folder, spec)
        if inner is not None:
            return inner
        if (root / (name + ANNOT)).is_dir():
            return Folders(folder, root / (name + ANNOT))
    return None


def _expected(root: Path, name: str, spec: DatasetSpec) -> Folders:
    """The folders named in errors when a split folder has no recognisable pair."""
    folder = root / name
    return Folders(folder / (spec.images or IMAGE_DIRS[0]), folder / (spec.labels or LABEL_DIRS[0]))


def _validate_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise ValueError(f"val_fraction must be a float in (0, 1), got {val_fraction!r}")
    if not (math.isfinite(val_fraction) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")


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


def _resolve_root(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise MissingDirectoryError(f"dataset root {path} does not exist; {_LAYOUT_HELP}")
    if not path.is_dir():
        raise MissingDirectoryError(f"dataset root {path} is not a directory; {_LAYOUT_HELP}")
    return path


def _no_layout_error(root: Path) -> DatasetError:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not entries:
        return EmptyDirectoryError(f"dataset root {root} is empty; {_LAYOUT_HELP}")
    shown = ", ".join(entries[:_MAX_LISTED]) + (" ..." if len(entries) > _MAX_LISTED else "")
    return MissingDirectoryError(
        f"dataset root {root} has neither train/ and val/ nor images/ and labels/ "
        f"(found: {shown}); {_LAYOUT_HELP}"
    )


def _existing(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).exists()), None)


def _discover_train_val(root: Path, val_fraction: float | None,
                        spec: DatasetSpec) -> tuple[list[Pair], list[Pair]]:
    if val_fraction is not None:
        warnings.warn(
            f"{root} already has train/ and val/; ignoring val_fraction={val_fraction}",
            stacklevel=4,
        )
    flat = [p for p in (_first_dir(root, _names(spec.images, IMAGE_DIRS)),
                        _first_dir(root, _names(spec.labels, LABEL_DIRS))) if p is not None]
    if len(flat) == 2:
        warnings.warn(f"{root} has train/ and val/; ignoring {flat[0]} and {flat[1]}", stacklevel=4)
    train_dir = _existing(root, TRAIN_DIRS) or root / TRAIN_DIRS[0]
    val_dir = _existing(root, VAL_DIRS) or root / VAL_DIRS[0]
    _check_directory(train_dir, "train split")
    _check_directory(val_dir, "val split")
    train = split_folders(root, (train_dir.name,), spec) or _expected(root, train_dir.name, spec)
    val = split_folders(root, (val_dir.name,), spec) or _expected(root, val_dir.name, spec)
    return pairs_of(train, spec), pairs_of(val, spec)


def is_split_layout(root: Path) -> bool:
    """True when the root has train/ or val/ folders (under any accepted name): no val_fraction needed."""
    return _existing(root, (*TRAIN_DIRS, *VAL_DIRS)) is not None


def _discover(
    root: Path, val_fraction: float | None, split_seed: int, spec: DatasetSpec | None = None
) -> tuple[list[Pair], list[Pair], bool]:
    """Return (train pairs, val pairs, whether val_fraction was used)."""
    spec = spec or DatasetSpec()
    if is_split_layout(root):
        train, val = _discover_train_val(root, val_fraction, spec)
        return train, val, False
    flat = pair_in(root, spec)
    if flat is not None:
        if val_fraction is None:
            raise MissingDirectoryError(
                f"dataset root {root} has {flat.images.name}/ and {flat.labels.name}/ but no train/ and val/; "
                "pass val_fraction (e.g. val_fraction=0.2) to split it, or arrange the files as "
                "ROOT/train/{images,labels} and ROOT/val/{images,labels}"
            )
        pairs = pairs_of(flat, spec)
        train, val = split_pairs(pairs, val_fraction, split_seed)
        return train, val, True
    raise _no_layout_error(root)


def discover_splits(root: str | Path, val_fraction: float | None = None, split_seed: int = 0,
                    spec: DatasetSpec | None = None) -> tuple[Path, list[Pair], list[Pair]]:
    """(resolved root, train pairs, val pairs) as :func:`~seg.data.load_dataset` would find them, without
    decoding anything; the same errors for a missing or malformed layout. ``spec`` defaults to
    ROOT/dataset.toml (or the default spec when there is none)."""
    if val_fraction is not None:
        _validate_fraction(val_fraction)
    path = _resolve_root(root)
    train, val, _ = _discover(path, val_fraction, split_seed, spec or read_dataset_spec(path))
    return path, train, val


def find_labelled_folder(root: Path, spec: DatasetSpec) -> list[Pair]:
    """The pairs of one labelled folder (a test set): ROOT/{images,labels}, ROOT/test/{images,labels},
    ROOT/test + ROOT/testannot, or a single split folder of any accepted name."""
    found = pair_in(root, spec) or split_folders(root, TEST_DIRS, spec)
    if found is None:
        splits = [n for n in (*TEST_DIRS, *VAL_DIRS, *TRAIN_DIRS) if (root / n).is_dir()]
        found = split_folders(root, tuple(splits[:1]), spec) if len(splits) == 1 else None
    if found is None:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        shown = ", ".join(entries[:_MAX_LISTED]) + (" ..." if len(entries) > _MAX_LISTED else "") or "nothing"
        raise MissingDirectoryError(
            f"labelled folder {root} has no images and labels folders (found: {shown}); expected "
            f"ROOT/images + ROOT/labels, ROOT/test/images + ROOT/test/labels or ROOT/test + ROOT/testannot "
            f"(also accepted: {'/, '.join(IMAGE_DIRS)}/ for images; {'/, '.join(LABEL_DIRS)}/ for labels); other "
            f"names are set in ROOT/{SPEC_FILE} with images = \"...\", labels = \"...\" and label_suffix")
    return pairs_of(found, spec)
