"""Writing the dataset to disk, and the cached default dataset (atomic generation, COMPLETE marker)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seg.synth.scene import _render_scene
from seg.synth.spec import CLASSES, NUM_CLASSES, SceneParams, scene_params

FORMAT_VERSION = "synth-v5"  # bump when the rendering changes: it is part of the cache key
COMPLETE_MARKER = "COMPLETE"
SPLITS: tuple[str, ...] = ("train", "val")

# Fixed PNG options: PIL writes no timestamp or text chunks unless asked, so
# equal arrays give equal bytes.
_PNG_OPTIONS: dict[str, Any] = {"format": "PNG", "optimize": False, "compress_level": 6}


# --------------------------------------------------------------------------- writing


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Generator for one image, independent of generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _save_png(array: np.ndarray, path: Path) -> None:
    mode = "RGB" if array.ndim == 3 else "L"
    Image.fromarray(array, mode=mode).save(path, **_PNG_OPTIONS)


def _write_split(
    root: Path, split: str, n: int, seed: int, min_size: int, max_size: int, params: SceneParams
) -> np.ndarray:
    """Render and write one split; returns per-class pixel counts, int64 (NUM_CLASSES,)."""
    image_dir, label_dir = root / split / "images", root / split / "labels"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for index in range(n):
        rng = _image_rng(seed, split, index)
        # Height and width independently, like photographs of varied size.
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        image, label = _render_scene(rng, height, width, params)
        stem = f"{index:06d}.png"
        _save_png(image, image_dir / stem)
        _save_png(label, label_dir / stem)
        counts += np.bincount(label.ravel(), minlength=NUM_CLASSES)
    return counts


def write_splits(
    root: Path, *, seed: int, n_train: int, n_val: int, min_size: int, max_size: int, params: SceneParams
) -> np.ndarray:
    """Render and write both splits under `root`; returns the label pixel count per class.

    Every dataset this package writes goes through here, so it is the seam to wrap when testing
    what happens around generation (e.g. another process finishing the same cache first)."""
    if not 8 <= min_size <= max_size:
        raise ValueError(f"need 8 <= min_size <= max_size, got {min_size}, {max_size}")
    if n_train < 0 or n_val < 0:
        raise ValueError("n_train and n_val must be >= 0")
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for split, n in zip(SPLITS, (n_train, n_val)):
        counts += _write_split(root, split, n, seed, min_size, max_size, params)
    return counts


def generate_dataset(
    root: Path,
    *,
    seed: int = 0,
    n_train: int = 400,
    n_val: int = 100,
    min_size: int = 96,
    max_size: int = 160,
    **knobs: Any,
) -> Path:
    """Write ``root/{train,val}/{images,labels}/NNNNNN.png``; returns root.

    ``knobs`` are the ``SceneParams`` fields. Writes no COMPLETE marker (that is
    ``default_dataset_root``'s job).
    """
    root = Path(root)
    write_splits(
        root, seed=seed, n_train=n_train, n_val=n_val, min_size=min_size, max_size=max_size,
        params=scene_params(**knobs),
    )
    return root


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """$SEG_CACHE_DIR, else ~/.cache/unet-search."""
    env = os.environ.get("SEG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unet-search"


def dataset_parameters(
    *, seed: int = 0, n_train: int = 400, n_val: int = 100, min_size: int = 96, max_size: int = 160,
    **knobs: Any,
) -> dict[str, Any]:
    """Canonical JSON-able parameters (defaults filled in), the cache key's input."""
    params = scene_params(**knobs)
    return {
        "format": FORMAT_VERSION,
        "seed": int(seed),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "scene": json.loads(json.dumps(dataclasses.asdict(params))),  # tuples -> lists
    }


def parameters_hash(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]


def content_hash(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every file but the marker, sorted."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def is_complete(root: Path, parameters: dict[str, Any] | None = None) -> bool:
    """True if root holds a COMPLETE marker (for `parameters`, when given)."""
    try:
        marker = json.loads((Path(root) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and (parameters is None or marker.get("parameters") == parameters)


def _discard(path: Path) -> None:
    """Remove a directory that is not a complete dataset.

    It is first renamed to a unique name so that a concurrent caller never sees
    it half-deleted; if it is already gone, someone else dealt with it.
    """
    trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temps(cache: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temp/trash dirs left by crashed runs, old enough that no live run owns them."""
    now = time.time()
    for leftover in [*cache.glob(f".{FORMAT_VERSION}-*.tmp-*"), *cache.glob(f".{FORMAT_VERSION}-*.trash-*")]:
        try:
            if now - leftover.stat().st_mtime > max_age_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def default_dataset_root(
    cache_dir: Path | None = None,
    *,
    seed: int = 0,
    n_train: int = 400,
    n_val: int = 100,
    **knobs: Any,
) -> Path:
    """Return ``CACHE/synth-v5-<hash>/``, generating the dataset there once.

    Safe for concurrent callers: each generates into its own temporary sibling
    directory (COMPLETE marker written last) and renames it into place
    atomically; whoever loses the race discards its copy. The final path thus
    only ever holds a complete dataset. ``knobs``: min_size, max_size and the
    ``SceneParams`` fields.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    parameters = dataset_parameters(seed=seed, n_train=n_train, n_val=n_val, **knobs)
    name = f"{FORMAT_VERSION}-{parameters_hash(parameters)}"
    final = cache / name
    if is_complete(final, parameters):
        return final

    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(cache)
    tmp = cache / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        counts = write_splits(
            tmp, seed=parameters["seed"], n_train=parameters["n_train"], n_val=parameters["n_val"],
            min_size=parameters["min_size"], max_size=parameters["max_size"],
            params=scene_params(**parameters["scene"]),
        )
        marker = {
            "parameters": parameters,
            "content_sha256": content_hash(tmp),
            "classes": list(CLASSES),
            "class_pixel_counts": [int(c) for c in counts],
        }
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        for _ in range(3):
            try:
                os.rename(tmp, final)  # atomic; fails if final is a non-empty dir
                return final
            except OSError:
                if is_complete(final, parameters):
                    return final  # another process finished first; ours is discarded below
                if final.exists():
                    _discard(final)  # leftover without a valid marker: never a dataset
                # else it vanished in between; just retry the rename
        raise RuntimeError(f"could not move the generated dataset into {final}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
