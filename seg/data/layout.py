"""Dataset root layouts: ``train/`` + ``val/`` folders, or a flat folder split by ``val_fraction``.

The flat split is deterministic: stems are ranked by a SHA-256 hash of
``(split_seed, stem)``, so the same stems always go to val.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

from seg.data.discover import Pair, _check_directory, find_pairs
from seg.data.errors import _MAX_LISTED, DatasetError, EmptyDirectoryError, MissingDirectoryError

_LAYOUT_HELP = (
    "expected either ROOT/train/images, ROOT/train/labels, ROOT/val/images and "
    "ROOT/val/labels, or ROOT/images and ROOT/labels together with a val_fraction"
)


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


def discover_splits(root: str | Path, val_fraction: float | None = None,
                    split_seed: int = 0) -> tuple[Path, list[Pair], list[Pair]]:
    """(resolved root, train pairs, val pairs) as :func:`~seg.data.load_dataset` would find them, without
    decoding anything; the same errors for a missing or malformed layout."""
    if val_fraction is not None:
        _validate_fraction(val_fraction)
    path = _resolve_root(root)
    train, val, _ = _discover(path, val_fraction, split_seed)
    return path, train, val
