"""Tests for seg.synth, the embedded procedural dataset (fast: small n, small images)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg import synth

SMALL = {"n_train": 6, "n_val": 3, "min_size": 48, "max_size": 80}
CACHE_SMALL = {"n_train": 4, "n_val": 2, "min_size": 48, "max_size": 64}


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- rendering


def test_classes_and_descriptions() -> None:
    assert len(synth.CLASSES) == 10 and synth.CLASSES[0] == "background"
    assert len(set(synth.CLASSES)) == 10
    assert set(synth.CLASS_DESCRIPTIONS) == set(synth.CLASSES)
    assert synth.CLASSES[1:4] == ("disk-solid", "disk-rings", "disk-dots")
    assert synth.CLASSES[-1] == "triangle-speckled"
    assert len(set(synth.TEXTURES)) == 9  # one texture per class


def test_render_scene_shapes_and_dtypes() -> None:
    image, label = synth.render_scene(np.random.default_rng(0), 70, 110)
    assert image.shape == (70, 110, 3) and image.dtype == np.uint8
    assert label.shape == (70, 110) and label.dtype == np.uint8
    assert label.max() < 10 and (label > 0).any() and (label == 0).any()


def test_render_scene_rejects_unknown_knob() -> None:
    with pytest.raises(TypeError):
        synth.render_scene(np.random.default_rng(0), 64, 64, n_objectz=(1, 2))
    with pytest.raises(ValueError):
        synth.render_scene(np.random.default_rng(0), 64, 64, n_objects=(5, 2))


def test_knobs_change_the_scene() -> None:
    quiet = synth.render_scene(np.random.default_rng(3), 96, 96, noise_sigma=0.0, n_objects=(0, 0), n_clutter=(0, 0))
    assert not quiet[1].any()  # no objects -> all background
    many = synth.render_scene(np.random.default_rng(3), 128, 128, n_objects=(7, 7))
    few = synth.render_scene(np.random.default_rng(3), 128, 128, n_objects=(1, 1))
    assert len(np.unique(many[1])) > len(np.unique(few[1]))


# --------------------------------------------------------------------------- dataset files


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = synth.generate_dataset(tmp_path / "a", seed=7, **SMALL)
    b = synth.generate_dataset(tmp_path / "b", seed=7, **SMALL)
    c = synth.generate_dataset(tmp_path / "c", seed=8, **SMALL)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert len(files_a) == 2 * (SMALL["n_train"] + SMALL["n_val"])
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert all(files_a[k] != files_c[k] for k in files_a if "/images/" in k)


def test_images_do_not_depend_on_generation_order(tmp_path: Path) -> None:
    # Per-image generators: a smaller dataset is a prefix of a larger one.
    small = _files(synth.generate_dataset(tmp_path / "s", seed=1, n_train=2, n_val=1, min_size=48, max_size=64))
    large = _files(synth.generate_dataset(tmp_path / "l", seed=1, n_train=5, n_val=3, min_size=48, max_size=64))
    assert small and all(large[k] == v for k, v in small.items())


def test_layout_and_pairing(tmp_path: Path) -> None:
    root = synth.generate_dataset(tmp_path / "d", seed=0, n_train=12, n_val=4, min_size=40, max_size=90)
    sizes = set()
    for split, n in (("train", 12), ("val", 4)):
        images = sorted((root / split / "images").glob("*.png"))
        labels = sorted((root / split / "labels").glob("*.png"))
        assert len(images) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        for image_path, label_path in zip(images, labels):
            with Image.open(image_path) as im, Image.open(label_path) as lb:
                assert im.mode == "RGB" and lb.mode == "L"
                assert im.size == lb.size
                width, height = im.size
                assert 40 <= width <= 90 and 40 <= height <= 90
                sizes.add((height, width))
                assert np.asarray(lb).max() <= 9
    assert len(sizes) > 8  # sizes vary per image (and H, W independently)
    assert any(h != w for h, w in sizes)


def test_every_class_appears(tmp_path: Path) -> None:
    root = synth.generate_dataset(tmp_path / "d", seed=0, n_train=40, n_val=0)
    present = set()
    for label_path in (root / "train" / "labels").glob("*.png"):
        present |= set(np.unique(np.asarray(Image.open(label_path))).tolist())
    assert present == set(range(10))


def test_colour_does_not_identify_class() -> None:
    # Without noise every object pixel is exactly a palette colour; histogram the
    # palette colours per class (rows: 9 object classes, cols: 12 palette colours).
    rng = np.random.default_rng(123)
    palette = synth.PALETTE.astype(np.int32)
    hist = np.zeros((10, len(palette)))
    for _ in range(60):
        image, label = synth.render_scene(rng, 96, 96, noise_sigma=0.0)
        colour = np.argmin(((image[:, :, None, :].astype(np.int32) - palette) ** 2).sum(-1), axis=-1)
        np.add.at(hist, (label.ravel(), colour.ravel()), 1)
    objects = hist[1:]
    assert (objects.sum(1) > 0).all()
    share = objects / objects.sum(1, keepdims=True)
    # Every palette colour is a notable colour of most object classes ...
    assert ((share > 0.02).sum(0) >= 6).all()
    # ... the colour distributions of any two classes overlap substantially ...
    overlap = np.minimum(share[:, None, :], share[None, :, :]).sum(-1)
    assert overlap.min() > 0.4  # a colour-coded dataset would give ~0
    # ... and predicting the class from a pixel's colour is close to chance (1/9).
    accuracy = objects.max(0).sum() / objects.sum()
    assert accuracy < 0.25


# --------------------------------------------------------------------------- cache


def test_default_dataset_root_generates_once(tmp_path: Path) -> None:
    root = synth.default_dataset_root(tmp_path, seed=0, **CACHE_SMALL)
    assert root.parent == tmp_path and root.name.startswith("synth-v5-")
    marker = json.loads((root / "COMPLETE").read_text())
    assert marker["parameters"]["n_train"] == CACHE_SMALL["n_train"]
    assert marker["content_sha256"] == synth.content_hash(root)
    assert len(list((root / "train" / "images").glob("*.png"))) == CACHE_SMALL["n_train"]
    before = _mtimes(root)

    again = synth.default_dataset_root(tmp_path, seed=0, **CACHE_SMALL)
    assert again == root
    assert _mtimes(root) == before  # nothing rewritten, marker included
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temp dirs left behind

    other = synth.default_dataset_root(tmp_path, seed=1, **CACHE_SMALL)
    assert other != root and synth.is_complete(other)


def test_explicit_defaults_share_the_cache_entry(tmp_path: Path) -> None:
    a = synth.default_dataset_root(tmp_path, n_train=2, n_val=1, min_size=48, max_size=64)
    b = synth.default_dataset_root(
        tmp_path, n_train=2, n_val=1, min_size=48, max_size=64, noise_sigma=synth.SceneParams.noise_sigma
    )
    assert a == b


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "env-cache"))
    assert synth.default_cache_dir() == tmp_path / "env-cache"
    root = synth.default_dataset_root(**CACHE_SMALL)
    assert root.parent == tmp_path / "env-cache" and synth.is_complete(root)


def test_incomplete_final_dir_is_regenerated(tmp_path: Path) -> None:
    name = f"synth-v5-{synth.parameters_hash(synth.dataset_parameters(seed=0, **CACHE_SMALL))}"
    half = tmp_path / name / "train" / "images"
    half.mkdir(parents=True)
    (half / "000000.png").write_bytes(b"half-written")
    assert not synth.is_complete(tmp_path / name)

    root = synth.default_dataset_root(tmp_path, seed=0, **CACHE_SMALL)
    assert root == tmp_path / name and synth.is_complete(root)
    assert (root / "train" / "images" / "000000.png").read_bytes() != b"half-written"
    assert len(list((root / "val" / "labels").glob("*.png"))) == CACHE_SMALL["n_val"]


def test_stale_temp_dir_is_not_used(tmp_path: Path) -> None:
    name = f"synth-v5-{synth.parameters_hash(synth.dataset_parameters(seed=0, **CACHE_SMALL))}"
    stale = tmp_path / f".{name}.tmp-99999-deadbeef"
    (stale / "train" / "images").mkdir(parents=True)
    (stale / "COMPLETE").write_text("{}")  # even a marker in a temp dir does not count

    root = synth.default_dataset_root(tmp_path, seed=0, **CACHE_SMALL)
    assert root == tmp_path / name and root != stale
    assert synth.is_complete(root, synth.dataset_parameters(seed=0, **CACHE_SMALL))

    # An old enough stale temp dir is cleaned up by the next generation.
    old = 1_000_000_000
    os.utime(stale, (old, old))
    synth.default_dataset_root(tmp_path, seed=5, **CACHE_SMALL)
    assert not stale.exists()


def test_losing_the_rename_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate another process finishing first: while we generate into our temp
    # dir, a complete dataset appears at the final path.
    real_generate = synth.writer.write_splits
    state = {"winner_marker": None}

    def generate_and_lose(root: Path, **kwargs: object) -> np.ndarray:
        counts = real_generate(root, **kwargs)
        if state["winner_marker"] is None:
            monkeypatch.setattr(synth.writer, "write_splits", real_generate)
            winner = synth.default_dataset_root(tmp_path, seed=0, **CACHE_SMALL)
            state["winner_marker"] = (winner / "COMPLETE").stat().st_mtime_ns
        return counts

    monkeypatch.setattr(synth.writer, "write_splits", generate_and_lose)
    root = synth.default_dataset_root(tmp_path, seed=0, **CACHE_SMALL)
    assert synth.is_complete(root)
    assert (root / "COMPLETE").stat().st_mtime_ns == state["winner_marker"]
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # loser's temp dir discarded


# --------------------------------------------------------------------------- CLI


def test_cli_writes_dataset_and_prints_frequencies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synth.main(["--out", str(out), "--n-train", "3", "--n-val", "2", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "3 train + 2 val" in printed
    assert all(name in printed for name in synth.CLASSES)
    assert len(list((out / "val" / "labels").glob("*.png"))) == 2
