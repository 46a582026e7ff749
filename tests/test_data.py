"""Tests for seg.data: discovery, validation, decoding, splitting and caching."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from seg import data
from seg.data import (
    DatasetError,
    DatasetSpec,
    DuplicateStemError,
    EmptyDirectoryError,
    IgnoredFileWarning,
    LabelFormatError,
    LabelValueError,
    MissingDirectoryError,
    Pair,
    SizeMismatchError,
    UnpairedFileError,
    UnreadableFileError,
    compute_mean_std,
    decode_image,
    decode_label,
    find_pairs,
    load_dataset,
    split_pairs,
)

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    data.clear_cache()
    yield
    data.clear_cache()


def write_rgb(path: Path, width: int = 4, height: int = 3, seed: int = 0) -> np.ndarray:
    """Write a random RGB PNG (lossless) and return its (H, W, 3) pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def write_label(path: Path, width: int = 4, height: int = 3, values: np.ndarray | None = None) -> np.ndarray:
    """Write a mode-L label PNG and return its (H, W) pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if values is None:
        values = (np.arange(width * height) % 2).reshape(height, width)
    arr = np.asarray(values, dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(path)
    return arr


def make_split(directory: Path, stems: list[str], width: int = 4, height: int = 3, seed: int = 0) -> None:
    for i, stem in enumerate(stems):
        write_rgb(directory / "images" / f"{stem}.png", width, height, seed=seed + i)
        write_label(directory / "labels" / f"{stem}.png", width, height)


def make_dataset(root: Path, train: tuple[str, ...] = ("a", "b"), val: tuple[str, ...] = ("c",)) -> Path:
    make_split(root / "train", list(train), seed=0)
    make_split(root / "val", list(val), seed=100)
    return root


def label_from(tmp_path: Path, img: Image.Image, name: str = "lab.png") -> Path:
    path = tmp_path / name
    img.save(path)
    return path


# ----------------------------------------------------------------------------- discovery


def test_find_pairs_pairs_by_stem_case_insensitive_suffixes(tmp_path: Path) -> None:
    write_rgb(tmp_path / "images" / "b.PNG")
    write_rgb(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "images" / "c.JPEG", format="JPEG")
    for stem in ("a", "b", "c"):
        write_label(tmp_path / "labels" / f"{stem}.png")
    pairs = find_pairs(tmp_path / "images", tmp_path / "labels")
    assert [p.stem for p in pairs] == ["a", "b", "c"]
    assert pairs[1].image == tmp_path / "images" / "b.PNG"
    assert pairs[2].image.name == "c.JPEG"
    assert all(p.label == tmp_path / "labels" / f"{p.stem}.png" for p in pairs)


def test_junk_and_hidden_files_warn_once_per_directory_and_are_skipped(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    (tmp_path / "images" / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "images" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "images" / "sub").mkdir()
    (tmp_path / "labels" / "notes.txt").write_text("hi")
    with pytest.warns(IgnoredFileWarning) as record:
        pairs = find_pairs(tmp_path / "images", tmp_path / "labels")
    assert [p.stem for p in pairs] == ["a"]
    messages = [str(w.message) for w in record if issubclass(w.category, IgnoredFileWarning)]
    assert len(messages) == 2
    images_msg = next(m for m in messages if str(tmp_path / "images") in m and "Thumbs.db" in m)
    assert str(tmp_path / "images" / ".hidden.png") in images_msg
    assert str(tmp_path / "images" / "sub") in images_msg
    assert any(str(tmp_path / "labels" / "notes.txt") in m for m in messages)


def test_clean_directory_does_not_warn(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_pairs(tmp_path / "images", tmp_path / "labels")


def test_missing_directory(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    with pytest.raises(MissingDirectoryError, match=re.escape(str(tmp_path / "nolabels"))):
        find_pairs(tmp_path / "images", tmp_path / "nolabels")


def test_empty_directory(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDirectoryError, match=re.escape(str(tmp_path / "empty"))):
        find_pairs(tmp_path / "empty", tmp_path / "labels")


def test_directory_with_only_junk_is_empty(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.warns(IgnoredFileWarning), pytest.raises(EmptyDirectoryError, match="ignored"):
        find_pairs(tmp_path / "images", tmp_path / "junk")


def test_unpaired_files_are_all_listed(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    write_rgb(tmp_path / "images" / "only_image.png")
    write_label(tmp_path / "labels" / "only_label.png")
    with pytest.raises(UnpairedFileError) as err:
        find_pairs(tmp_path / "images", tmp_path / "labels")
    msg = str(err.value)
    assert str(tmp_path / "images" / "only_image.png") in msg
    assert str(tmp_path / "labels" / "only_image.png") in msg  # the expected label path
    assert str(tmp_path / "labels" / "only_label.png") in msg
    assert "2 unpaired" in msg


def test_unpaired_listing_is_capped_with_count(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    for i in range(15):
        write_rgb(tmp_path / "images" / f"x{i:02d}.png", 2, 2)
    with pytest.raises(UnpairedFileError) as err:
        find_pairs(tmp_path / "images", tmp_path / "labels")
    msg = str(err.value)
    assert "15 image(s) without a label" in msg
    assert "and 5 more" in msg
    assert str(tmp_path / "images" / "x09.png") in msg
    assert str(tmp_path / "images" / "x14.png") not in msg


def test_duplicate_stems_name_both_files(tmp_path: Path) -> None:
    make_split(tmp_path, ["a"])
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    with pytest.raises(DuplicateStemError) as err:
        find_pairs(tmp_path / "images", tmp_path / "labels")
    assert str(tmp_path / "images" / "a.jpg") in str(err.value)
    assert str(tmp_path / "images" / "a.png") in str(err.value)


# ----------------------------------------------------------------------------- labels


def test_label_values_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    write_label(path, values=np.array([[0, 40, 12], [255, 1, 12]]))
    with pytest.raises(LabelValueError) as err:
        decode_label(path, num_classes=10)
    msg = str(err.value)
    assert str(path) in msg
    assert "[12, 40]" in msg
    assert "0..9" in msg and "255" in msg


def test_label_values_listing_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    write_label(path, values=np.arange(2, 22).reshape(4, 5))
    with pytest.raises(LabelValueError, match=re.escape("[2, 3, 4, 5, 6, 7, 8, 9, 10, 11] (and 10 more)")):
        decode_label(path, num_classes=2)


def test_label_mode_l_with_ignore_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    arr = write_label(path, values=np.array([[0, 1], [255, 2]]))
    mask = decode_label(path, num_classes=3)
    assert mask.dtype == torch.uint8 and mask.shape == (2, 2)
    assert torch.equal(mask, torch.from_numpy(arr))


def test_palette_label_uses_raw_indices(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1], [2, 255]], dtype=np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253  # VOC-like colours
    img.putpalette(palette)
    mask = decode_label(label_from(tmp_path, img), num_classes=3)
    assert mask.tolist() == [[0, 1], [2, 255]]


def test_palette_label_index_out_of_range(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 7]], dtype=np.uint8), mode="P")
    img.putpalette([0, 0, 0] * 256)
    with pytest.raises(LabelValueError, match=r"\[7\]"):
        decode_label(label_from(tmp_path, img), num_classes=3)


def test_16bit_label_in_range_is_converted(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1], [2, 255]], dtype=np.uint16))
    path = label_from(tmp_path, img)
    assert Image.open(path).mode.startswith("I")
    mask = decode_label(path, num_classes=3)
    assert mask.dtype == torch.uint8
    assert mask.tolist() == [[0, 1], [2, 255]]


def test_16bit_label_out_of_range_is_rejected(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1], [300, 1000]], dtype=np.uint16))
    path = label_from(tmp_path, img)
    with pytest.raises(LabelValueError) as err:
        decode_label(path, num_classes=3)
    assert "[300, 1000]" in str(err.value) and str(path) in str(err.value)


def test_gray_rgb_label_is_converted(tmp_path: Path) -> None:
    gray = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    path = label_from(tmp_path, Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB"))
    assert decode_label(path, num_classes=3).tolist() == gray.tolist()


def test_opaque_rgba_and_la_labels_are_converted(tmp_path: Path) -> None:
    gray = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    alpha = np.full_like(gray, 255)
    rgba = label_from(tmp_path, Image.fromarray(np.stack([gray, gray, gray, alpha], -1), mode="RGBA"), "rgba.png")
    la = label_from(tmp_path, Image.fromarray(np.stack([gray, alpha], -1), mode="LA"), "la.png")
    assert decode_label(rgba, 3).tolist() == gray.tolist()
    assert decode_label(la, 3).tolist() == gray.tolist()


def test_colour_rgb_label_is_rejected(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 3), np.uint8)
    arr[0, 0] = (128, 0, 0)
    path = label_from(tmp_path, Image.fromarray(arr, mode="RGB"))
    with pytest.raises(LabelFormatError) as err:
        decode_label(path, num_classes=3)
    msg = str(err.value)
    assert str(path) in msg and "ambiguous" in msg and "palette" in msg


def test_transparent_rgba_label_is_rejected(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[..., 3] = 255
    arr[1, 1, 3] = 0
    path = label_from(tmp_path, Image.fromarray(arr, mode="RGBA"))
    with pytest.raises(LabelFormatError, match=re.escape(str(path))):
        decode_label(path, num_classes=3)


def test_bilevel_label_becomes_zero_one(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    path = label_from(tmp_path, img)
    assert Image.open(path).mode == "1"
    mask = decode_label(path, num_classes=2)
    assert mask.dtype == torch.uint8 and mask.tolist() == [[0, 1], [1, 0]]


def test_jpeg_label_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lab.jpg"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    with pytest.raises(LabelFormatError) as err:
        decode_label(path, num_classes=3)
    assert str(path) in str(err.value) and "JPEG" in str(err.value)
    # A model's stored spec for JPEG binary masks reads it.
    spec = DatasetSpec().with_binary_threshold(128)
    assert decode_label(path, num_classes=2, spec=spec).tolist() == [[0, 0], [0, 0]]


def test_jpeg_named_png_label_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lab.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(path, format="JPEG")
    with pytest.raises(LabelFormatError, match=re.escape(str(path))):
        decode_label(path, num_classes=3)


@pytest.mark.parametrize("bad", [0, 256, -1, True, 2.0])
def test_num_classes_validated(tmp_path: Path, bad: object) -> None:
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset(tmp_path, bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- images


def test_rgb_png_decodes_exactly(tmp_path: Path) -> None:
    arr = write_rgb(tmp_path / "x.png", 5, 2)
    img = decode_image(tmp_path / "x.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 2, 5) and img.is_contiguous()
    assert torch.equal(img, torch.from_numpy(arr).permute(2, 0, 1))


def test_grayscale_image_becomes_rgb(tmp_path: Path) -> None:
    gray = np.array([[0, 50], [100, 200]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    img = decode_image(tmp_path / "g.png")
    assert img.shape == (3, 2, 2)
    for c in range(3):
        assert img[c].tolist() == gray.tolist()


def test_rgba_image_drops_alpha(tmp_path: Path) -> None:
    arr = np.zeros((1, 2, 4), np.uint8)
    arr[0, 0] = (10, 20, 30, 0)
    arr[0, 1] = (40, 50, 60, 255)
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    img = decode_image(tmp_path / "a.png")
    assert img.shape == (3, 1, 2)
    assert img[:, 0, 0].tolist() == [10, 20, 30]
    assert img[:, 0, 1].tolist() == [40, 50, 60]


def test_palette_image_expands_colours(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    img.putpalette([9, 8, 7, 1, 2, 3] + [0, 0, 0] * 254)
    img.save(tmp_path / "p.png")
    out = decode_image(tmp_path / "p.png")
    assert out[:, 0, 0].tolist() == [9, 8, 7] and out[:, 0, 1].tolist() == [1, 2, 3]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (4, 3), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    img = decode_image(tmp_path / "c.jpg")
    assert img.shape == (3, 3, 4)
    assert img.float().mean() > 200  # no ink = white


def write_rotated_jpeg(path: Path) -> None:
    """Stored 16x8 (WxH): left half red, right half blue; EXIF orientation 6 (rotate 90 CW)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((8, 16, 3), np.uint8)
    arr[:, :8] = (255, 0, 0)
    arr[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif, quality=95)


def test_exif_rotated_image_is_transposed(tmp_path: Path) -> None:
    write_rotated_jpeg(tmp_path / "r.jpg")
    img = decode_image(tmp_path / "r.jpg").float()
    assert img.shape == (3, 16, 8)  # displayed: 8 wide, 16 high
    top, bottom = img[:, 2:6], img[:, 10:14]  # stored left (red) is displayed on top
    assert top[0].mean() > 200 and top[2].mean() < 50
    assert bottom[2].mean() > 200 and bottom[0].mean() < 50


def test_exif_rotated_image_accepts_label_of_displayed_size(tmp_path: Path) -> None:
    write_rotated_jpeg(tmp_path / "train" / "images" / "r.jpg")
    write_label(tmp_path / "train" / "labels" / "r.png", width=8, height=16)
    make_split(tmp_path / "val", ["v"])
    ds = load_dataset(tmp_path, num_classes=2)
    assert ds.train.images[0].shape == (3, 16, 8)
    assert ds.train.masks[0].shape == (16, 8)


def test_exif_rotated_image_rejects_label_of_stored_size(tmp_path: Path) -> None:
    write_rotated_jpeg(tmp_path / "train" / "images" / "r.jpg")
    write_label(tmp_path / "train" / "labels" / "r.png", width=16, height=8)
    make_split(tmp_path / "val", ["v"])
    with pytest.raises(SizeMismatchError) as err:
        load_dataset(tmp_path, num_classes=2)
    msg = str(err.value)
    assert "16x8" in msg and "8x16" in msg and "EXIF orientation 6" in msg


def test_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    write_label(tmp_path / "train" / "labels" / "b.png", width=5, height=7)
    with pytest.raises(SizeMismatchError) as err:
        load_dataset(tmp_path, num_classes=2)
    msg = str(err.value)
    assert str(tmp_path / "train" / "labels" / "b.png") in msg
    assert str(tmp_path / "train" / "images" / "b.png") in msg
    assert "5x7" in msg and "4x3" in msg


# ----------------------------------------------------------------------------- unreadable files


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_truncated_png_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    write_rgb(path, 64, 64)
    truncate(path)
    with pytest.raises(UnreadableFileError, match=re.escape(str(path))):
        decode_image(path)


def test_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "t.jpg"
    arr = np.random.RandomState(1).randint(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    truncate(path)
    with pytest.raises(UnreadableFileError, match=re.escape(str(path))):
        decode_image(path)


def test_truncation_detected_even_if_pillow_tolerance_was_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # importing seg.data must not enable it
    path = tmp_path / "t.png"
    write_rgb(path, 64, 64)
    truncate(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(UnreadableFileError):
        decode_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_zero_byte_files_are_unreadable(tmp_path: Path) -> None:
    (tmp_path / "z.png").write_bytes(b"")
    with pytest.raises(UnreadableFileError, match=re.escape(str(tmp_path / "z.png"))):
        decode_image(tmp_path / "z.png")
    with pytest.raises(UnreadableFileError, match=re.escape(str(tmp_path / "z.png"))):
        decode_label(tmp_path / "z.png", num_classes=2)


def test_garbage_file_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "g.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(UnreadableFileError, match=re.escape(str(tmp_path / "g.jpg"))):
        decode_image(tmp_path / "g.jpg")


def test_truncated_label_in_dataset_is_unreadable(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    label = tmp_path / "val" / "labels" / "c.png"
    write_label(label, 4, 3, values=np.random.RandomState(0).randint(0, 2, (3, 4)))
    label.write_bytes(label.read_bytes()[:40])
    with pytest.raises(UnreadableFileError, match=re.escape(str(label))):
        load_dataset(tmp_path, num_classes=2)


# ----------------------------------------------------------------------------- split


def fake_pairs(n: int) -> list[Pair]:
    return [Pair(f"s{i:03d}", Path(f"/i/s{i:03d}.png"), Path(f"/l/s{i:03d}.png")) for i in range(n)]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    pairs = fake_pairs(50)
    train, val = split_pairs(pairs, 0.2, seed=3)
    assert split_pairs(pairs, 0.2, seed=3) == (train, val)
    assert split_pairs(list(reversed(pairs)), 0.2, seed=3) == (train, val)
    assert len(val) == 10 and len(train) == 40
    assert {p.stem for p in train}.isdisjoint(p.stem for p in val)
    assert sorted(train + val, key=lambda p: p.stem) == pairs
    assert train == sorted(train, key=lambda p: p.stem)


def test_split_seed_changes_the_split() -> None:
    pairs = fake_pairs(50)
    assert split_pairs(pairs, 0.2, seed=0)[1] != split_pairs(pairs, 0.2, seed=1)[1]


def test_split_keeps_at_least_one_in_each() -> None:
    assert [len(s) for s in split_pairs(fake_pairs(2), 0.01, 0)] == [1, 1]
    assert [len(s) for s in split_pairs(fake_pairs(3), 0.99, 0)] == [1, 2]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        split_pairs(fake_pairs(10), fraction, 0)


def test_split_needs_two_pairs() -> None:
    with pytest.raises(DatasetError, match="at least 2"):
        split_pairs(fake_pairs(1), 0.5, 0)


# ----------------------------------------------------------------------------- mean/std


def test_mean_std_matches_hand_computation() -> None:
    a = torch.tensor([[[0, 255]], [[10, 20]], [[255, 255]]], dtype=torch.uint8)  # (3, 1, 2)
    b = torch.tensor([[[51]], [[30]], [[0]]], dtype=torch.uint8)  # (3, 1, 1)
    mean, std = compute_mean_std([a, b])
    # channel 0: values 0, 255, 51 -> /255: 0, 1, 0.2
    m0 = (0 + 1 + 0.2) / 3
    s0 = (((0 - m0) ** 2 + (1 - m0) ** 2 + (0.2 - m0) ** 2) / 3) ** 0.5
    assert mean[0] == pytest.approx(m0, abs=1e-12)
    assert std[0] == pytest.approx(s0, abs=1e-12)
    assert mean[1] == pytest.approx(20 / 255, abs=1e-12)
    assert std[1] == pytest.approx((200 / 3) ** 0.5 / 255, abs=1e-12)
    assert mean[2] == pytest.approx(2 / 3, abs=1e-12)


def test_mean_std_of_large_uniform_images_has_no_overflow() -> None:
    img = torch.full((3, 512, 512), 255, dtype=torch.uint8)
    mean, std = compute_mean_std([img] * 20)
    assert mean == (1.0, 1.0, 1.0) and std == (0.0, 0.0, 0.0)


def test_mean_std_rejects_empty_and_bad_input() -> None:
    with pytest.raises(ValueError):
        compute_mean_std([])
    with pytest.raises(ValueError):
        compute_mean_std([torch.zeros(3, 2, 2)])


# ----------------------------------------------------------------------------- load_dataset


def test_load_train_val_layout(tmp_path: Path) -> None:
    make_dataset(tmp_path, train=("a", "b"), val=("c",))
    ds = load_dataset(str(tmp_path), num_classes=2)
    assert ds.root == tmp_path.resolve() and ds.num_classes == 2
    assert [p.stem for p in ds.train.pairs] == ["a", "b"] and len(ds.train) == 2
    assert [p.stem for p in ds.val.pairs] == ["c"] and len(ds.val) == 1
    for img, mask in zip(ds.train.images + ds.val.images, ds.train.masks + ds.val.masks):
        assert img.dtype == torch.uint8 and img.shape == (3, 3, 4)
        assert mask.dtype == torch.uint8 and mask.shape == (3, 4)
    train_pixels = torch.cat([i.reshape(3, -1) for i in ds.train.images], dim=1).double() / 255
    assert ds.mean == pytest.approx(tuple(train_pixels.mean(dim=1).tolist()), abs=1e-12)
    assert ds.std == pytest.approx(tuple(train_pixels.std(dim=1, unbiased=False).tolist()), abs=1e-12)


def test_load_flat_layout_with_fraction(tmp_path: Path) -> None:
    make_split(tmp_path, [f"s{i}" for i in range(10)])
    ds = load_dataset(tmp_path, num_classes=2, val_fraction=0.3, split_seed=7)
    assert len(ds.train) == 7 and len(ds.val) == 3
    expected_train, expected_val = split_pairs(find_pairs(tmp_path / "images", tmp_path / "labels"), 0.3, 7)
    assert list(ds.train.pairs) == expected_train and list(ds.val.pairs) == expected_val


def test_flat_layout_without_fraction_says_to_pass_one(tmp_path: Path) -> None:
    make_split(tmp_path, ["a", "b"])
    with pytest.raises(MissingDirectoryError, match="val_fraction"):
        load_dataset(tmp_path, num_classes=2)


def test_train_val_layout_ignores_fraction_with_warning(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    with pytest.warns(UserWarning, match="ignoring val_fraction"):
        ds = load_dataset(tmp_path, num_classes=2, val_fraction=0.5)
    assert [p.stem for p in ds.val.pairs] == ["c"]


def test_root_without_layout_lists_expected_layouts(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(MissingDirectoryError) as err:
        load_dataset(tmp_path, num_classes=2)
    msg = str(err.value)
    assert str(tmp_path) in msg and "ROOT/train/images" in msg and "ROOT/images" in msg and "stuff" in msg


def test_empty_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(EmptyDirectoryError, match=re.escape(str(tmp_path))):
        load_dataset(tmp_path, num_classes=2)
    with pytest.raises(MissingDirectoryError, match=re.escape(str(tmp_path / "nope"))):
        load_dataset(tmp_path / "nope", num_classes=2)


def test_missing_val_split_is_named(tmp_path: Path) -> None:
    make_split(tmp_path / "train", ["a"])
    with pytest.raises(MissingDirectoryError, match=re.escape(str(tmp_path / "val"))):
        load_dataset(tmp_path, num_classes=2)


def test_empty_val_images_is_named(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    for f in (tmp_path / "val" / "images").iterdir():
        f.unlink()
    with pytest.raises(EmptyDirectoryError, match=re.escape(str(tmp_path / "val" / "images"))):
        load_dataset(tmp_path, num_classes=2)


def test_label_value_error_through_load_dataset(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    write_label(tmp_path / "val" / "labels" / "c.png", values=np.full((3, 4), 5))
    with pytest.raises(LabelValueError, match=re.escape(str(tmp_path / "val" / "labels" / "c.png"))):
        load_dataset(tmp_path, num_classes=2)


def test_all_errors_are_value_errors() -> None:
    for cls in (MissingDirectoryError, EmptyDirectoryError, UnpairedFileError, DuplicateStemError,
                SizeMismatchError, LabelValueError, LabelFormatError, UnreadableFileError):
        assert issubclass(cls, DatasetError) and issubclass(cls, ValueError)


# ----------------------------------------------------------------------------- cache


def test_cache_returns_same_object_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path)
    first = load_dataset(tmp_path, num_classes=2)

    def fail(*_: object, **__: object) -> torch.Tensor:
        raise AssertionError("decoded again")

    import seg.data.dataset as loader  # where load_dataset looks the decoders up

    monkeypatch.setattr(loader, "decode_image", fail)
    monkeypatch.setattr(loader, "read_label", fail)
    assert load_dataset(tmp_path, num_classes=2) is first
    assert load_dataset(str(tmp_path / "train" / ".."), num_classes=2) is first  # same resolved root


def test_cache_key_includes_arguments_and_clear(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    first = load_dataset(tmp_path, num_classes=2)
    assert load_dataset(tmp_path, num_classes=3) is not first
    data.clear_cache()
    assert load_dataset(tmp_path, num_classes=2) is not first


def test_cache_key_includes_split_arguments(tmp_path: Path) -> None:
    make_split(tmp_path, [f"s{i}" for i in range(6)])
    first = load_dataset(tmp_path, 2, val_fraction=0.5, split_seed=0)
    assert load_dataset(tmp_path, 2, val_fraction=0.5, split_seed=0) is first
    assert load_dataset(tmp_path, 2, val_fraction=0.5, split_seed=1) is not first
    assert load_dataset(tmp_path, 2, val_fraction=0.2, split_seed=0) is not first


def test_cache_invalidated_when_files_change(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    first = load_dataset(tmp_path, num_classes=2)
    label = tmp_path / "train" / "labels" / "a.png"
    write_label(label, values=np.zeros((3, 4)))
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))  # coarse mtime clocks
    second = load_dataset(tmp_path, num_classes=2)
    assert second is not first
    assert int(second.train.masks[0].sum()) == 0


def test_cache_invalidated_when_only_mtime_changes(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    first = load_dataset(tmp_path, num_classes=2)
    image = tmp_path / "val" / "images" / "c.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert load_dataset(tmp_path, num_classes=2) is not first
