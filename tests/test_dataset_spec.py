"""Label conventions: ROOT/dataset.toml, binary 0/255 masks, colour tables, layouts, strays and warnings.

Each dataset is a few 16x16 images generated in tmp_path in the convention real datasets use.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search.plan.classes import plan_classes
from search.plan.decisions import PlanError
from search.plan.planner import PlanRequest, make_plan
from search.plan.survey import survey_dataset
from seg import data
from seg.checkpoint import load_checkpoint, save_checkpoint
from seg.config import Config, DataConfig
from seg.data import (
    DatasetSpec,
    ImageTooLargeError,
    LabelFormatError,
    LabelValueError,
    LabelWarning,
    MissingDirectoryError,
    SpecError,
    UnpairedFileError,
    decode_image,
    load_dataset,
    load_labelled_folder,
    read_dataset_spec,
)
from seg.loaders import class_names, resolve_dataset
from seg.metrics import ConfusionMatrix
from seg.model import build_unet
from seg.train import fit, save_result

SIZE = 16


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def _image(path: Path, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _label(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "RGB" if values.ndim == 3 else "L"
    Image.fromarray(values.astype(np.uint8), mode=mode).save(path)


def _bands(values: list, seed: int = 0) -> np.ndarray:
    """A SIZE x SIZE label of vertical bands of these values (grey ints or [r, g, b] colours), shifted by seed."""
    first = np.asarray(values[0])
    out = np.zeros((SIZE, SIZE, *first.shape), np.uint8)
    for i, v in enumerate(values):
        out[:, (i * SIZE // len(values) + seed) % SIZE:] = v
    return out


def _write(root: Path, splits: dict[str, list[np.ndarray]], images: str = "images", labels: str = "labels",
           suffix: str = "", side_by_side: bool = False) -> Path:
    for split, arrays in splits.items():
        base = root / split if split else root
        for i, arr in enumerate(arrays):
            stem = f"{split or 'x'}{i:02d}"
            if side_by_side:
                _image(root / split / f"{stem}.png", i, arr.shape[:2])
                _label(root / f"{split}annot" / f"{stem}{suffix}.png", arr)
            else:
                _image(base / images / f"{stem}.jpg", i, arr.shape[:2])
                _label(base / labels / f"{stem}{suffix}.png", arr)
    return root


def _toml(root: Path, text: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.toml").write_text(text)


def _binary_set(root: Path, high: int) -> Path:
    return _write(root, {"train": [_bands([0, high], s) for s in range(3)], "val": [_bands([0, high], 5)]})


# ----------------------------------------------------------------------------- binary masks


@pytest.mark.parametrize("high", [255, 1])
def test_binary_masks_are_two_classes_and_all_background_does_not_score_one(tmp_path, high):
    root = _binary_set(tmp_path / "cells", high)
    ds = load_dataset(root, num_classes=2)
    assert ds.spec.binary and ds.spec.source == "detected"
    fg = sum(int((m == 1).sum()) for m in ds.val.masks)
    assert fg == int((_bands([0, high], 5) == high).sum()) > 0  # foreground is a class, not ignore
    assert all(set(torch.unique(m).tolist()) == {0, 1} for m in (*ds.train.masks, *ds.val.masks))
    cm = ConfusionMatrix(2)
    for mask in ds.val.masks:
        cm.update(mask, torch.zeros_like(mask))  # a trivially wrong model: all background
    assert cm.compute().miou < 0.75
    plan = plan_classes(survey_dataset(root))
    assert plan.num_classes == 2 and plan.names == ("background", "foreground")
    why = plan.decisions[0].why
    assert "binary masks" in why and ("ignore_index" if high == 255 else "label_map") in why and "dataset.toml" in why


def test_the_plan_of_0_255_masks_has_two_classes_and_says_why(tmp_path):
    """`search.plan --data DIR` on 0/255 masks: 2 classes, the line that says so, and the spec in its fingerprint."""
    root = tmp_path / "polyps"
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            mask = np.zeros((64, 72), np.uint8)
            mask[8 + i:40, 10:50 - i] = 255
            _image(root / split / "images" / f"{i}.jpg", i)
            _label(root / split / "masks" / f"{i}.png", mask)
    plan = make_plan(PlanRequest(data=str(root), device="cuda", memory_gb=8))
    assert plan.value("data", "num_classes") == 2 and plan.value("data", "class_names") == ["background", "foreground"]
    why = next(d.why for d in plan.decisions if d.key == "num_classes")
    assert why.startswith("binary masks") and "ignore_index = 255" in why
    assert plan.fingerprint["dataset_spec"]["label_map"] == {"255": 1}


def _soft_mask(seed: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(the file's values, the hard 0/1 truth) of a 0/255 mask saved as JPEG or anti-aliased by a resize."""
    yy, xx = np.mgrid[:96, :120]
    hard = ((yy - 40 - seed) ** 2 + (xx - 60) ** 2 < 900).astype(np.uint8) * 255
    if how == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(hard).save(buffer, "JPEG", quality=75)
        return np.array(Image.open(buffer)), (hard > 0).astype(np.uint8)
    small = Image.fromarray(hard).resize((60, 48), Image.Resampling.BILINEAR)
    return np.array(small), (np.array(Image.fromarray(hard).resize((60, 48), Image.Resampling.NEAREST)) > 0)


@pytest.mark.parametrize("how", ["jpeg", "resized"])
def test_anti_aliased_or_jpeg_0_255_masks_are_thresholded_into_two_classes(tmp_path, how):
    """Kvasir-SEG-like masks: values smeared around 0 and 255, not exactly binary: 2 classes, said so."""
    masks = {split: [_soft_mask(seed, how) for seed in seeds] for split, seeds in (("train", (0, 3, 6)), ("val", (9,)))}
    root = _write(tmp_path / "polyps", {split: [m for m, _ in pairs] for split, pairs in masks.items()})
    values = np.unique(np.concatenate([m.ravel() for pairs in masks.values() for m, _ in pairs]))
    assert len(values) > 8  # the files really are not binary
    ds = load_dataset(root, num_classes=2)
    assert ds.spec.binary and ds.spec.binary_threshold == 128 and ds.spec.source == "detected"
    (file_values, _), = masks["val"]
    assert torch.equal(ds.val.masks[0], torch.from_numpy((file_values >= 128).astype(np.uint8)))
    plan = plan_classes(survey_dataset(root))
    assert plan.num_classes == 2 and plan.names == ("background", "foreground")
    assert plan.decisions[0].why.startswith("anti-aliased or JPEG binary masks") and "128" in plan.decisions[0].why
    # The model's stored spec reads a test folder of the same kind the same way.
    stored = DatasetSpec.from_dict(ds.spec.to_dict())
    assert stored == ds.spec
    test = load_labelled_folder(_write(tmp_path / "test", {"": [m for m, _ in masks["train"]]}), 2, spec=stored)
    assert all(set(torch.unique(m).tolist()) == {0, 1} for m in test.masks)


def test_jpeg_mask_files_are_read_as_binary_and_jpeg_class_indices_refused(tmp_path):
    """Kvasir-SEG ships images/ + masks/ as .jpg: read, thresholded; a JPEG of class indices names its files."""
    root = tmp_path / "kvasir"
    for i in range(4):
        hard = _soft_mask(3 * i, "resized")[1].astype(np.uint8) * 255
        _image(root / "images" / f"p{i}.jpg", i, hard.shape)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([hard] * 3, -1)).save(root / "masks" / f"p{i}.jpg", quality=75)  # RGB, as Kvasir
    ds = load_dataset(root, num_classes=2, val_fraction=0.25)
    assert ds.spec.binary and all(set(torch.unique(m).tolist()) <= {0, 1} for m in (*ds.train.masks, *ds.val.masks))
    assert plan_classes(survey_dataset(root)).num_classes == 2
    for i in range(4):  # now class indices 0, 1, 2 as JPEG: smeared, refused
        Image.fromarray((_bands([0, 1, 2], i) * 1).astype(np.uint8)).resize((60, 48)).save(root / "masks" / f"p{i}.jpg")
    data.clear_cache()
    with pytest.raises(LabelFormatError, match=r"4 label file\(s\) are JPEG") as info:
        load_dataset(root, num_classes=3, val_fraction=0.25)
    assert "p0.jpg" in str(info.value) and "single-channel PNG" in str(info.value)
    with pytest.raises(LabelFormatError, match="are JPEG"):
        survey_dataset(root)


def test_class_index_labels_with_a_void_255_are_not_taken_for_soft_masks(tmp_path):
    """0..16 and 255 (VOC's convention), mostly background: 17 classes, never thresholded."""
    labels = []
    for seed in range(4):
        arr = np.zeros((SIZE, SIZE), np.uint8)
        arr[seed:seed + 2, :] = np.arange(1, SIZE + 1)  # classes 1..16 in a thin band
        arr[-1, :] = 255
        labels.append(arr)
    root = _write(tmp_path / "voc", {"train": labels[:3], "val": labels[3:]})
    ds = load_dataset(root, num_classes=SIZE + 1)
    assert not ds.spec.binary and ds.spec.binary_threshold is None
    assert int(ds.val.masks[0].max()) == 255 and len(torch.unique(ds.train.masks[0])) > 2


def test_an_explicit_ignore_index_wins_over_the_binary_rule(tmp_path):
    root = _binary_set(tmp_path / "cells", 255)
    _toml(root, "ignore_index = 255\n")
    with pytest.raises(LabelValueError, match="1 class") as info:
        load_dataset(root, num_classes=2)
    assert "0, 255" in str(info.value) and "label_map" in str(info.value)
    with pytest.raises(PlanError, match="1 class"):
        plan_classes(survey_dataset(root))


def test_a_label_map_makes_0_255_two_classes(tmp_path):
    root = _binary_set(tmp_path / "cells", 255)
    _toml(root, 'ignore_index = "none"\nlabel_map = { 255 = 1 }\nclasses = ["bg", "cell"]\n')
    ds = load_dataset(root, num_classes=2)
    assert not ds.spec.binary and ds.spec.ignore_index is None and ds.spec.label_map == {255: 1}
    assert set(torch.unique(ds.val.masks[0]).tolist()) == {0, 1}
    assert class_names(DataConfig(root=str(root), num_classes=2)) == ("bg", "cell")
    plan = plan_classes(survey_dataset(root))
    assert plan.num_classes == 2 and plan.names == ("bg", "cell")


def test_ignore_none_refuses_an_unmapped_255(tmp_path):
    root = _binary_set(tmp_path / "cells", 255)
    _toml(root, 'ignore_index = "none"\n')
    with pytest.raises(LabelValueError, match=r'ignore_index is "none".*label_map = \{ 255 = N \}'):
        load_dataset(root, num_classes=2)


# ----------------------------------------------------------------------------- ignore_index, label_map, colours


def test_an_ignore_index_other_than_255(tmp_path):
    root = _write(tmp_path / "street", {"train": [_bands([0, 1, 2, 11], s) for s in range(2)],
                                        "val": [_bands([0, 1, 2, 11], 3)]})
    _toml(root, "ignore_index = 11\n")
    ds = load_dataset(root, num_classes=3)
    assert set(torch.unique(ds.val.masks[0]).tolist()) == {0, 1, 2, 255}
    assert int((ds.val.masks[0] == 255).sum()) == int((_bands([0, 1, 2, 11], 3) == 11).sum())
    assert plan_classes(survey_dataset(root)).num_classes == 3


def test_a_label_map(tmp_path):
    root = _write(tmp_path / "mapped", {"train": [_bands([0, 5, 7], s) for s in range(2)],
                                        "val": [_bands([0, 5, 7], 3)]})
    _toml(root, "label_map = { 5 = 1, 7 = 255 }\n")
    ds = load_dataset(root, num_classes=2)
    raw = _bands([0, 5, 7], 3)
    expected = np.where(raw == 5, 1, np.where(raw == 7, 255, 0))
    assert ds.val.masks[0].tolist() == expected.tolist()


ROAD, SKY, VOID = [128, 64, 128], [70, 130, 180], [0, 0, 0]
COLOUR_TOML = """classes = [
  { name = "road", color = [128, 64, 128] },
  { name = "sky", color = [70, 130, 180] },
  { name = "void", color = [0, 0, 0], ignore = true },
]
"""


def test_rgb_colour_labels_with_a_colour_table(tmp_path):
    root = _write(tmp_path / "camvid", {"train": [_bands([ROAD, SKY, VOID], s) for s in range(2)],
                                        "val": [_bands([ROAD, SKY, VOID], 3)]})
    _toml(root, COLOUR_TOML)
    ds = load_dataset(root, num_classes=2)
    raw = _bands([ROAD, SKY, VOID], 3)
    expected = np.where((raw == SKY).all(-1), 1, np.where((raw == VOID).all(-1), 255, 0))
    assert ds.val.masks[0].tolist() == expected.tolist()
    assert ds.spec.class_names == ("road", "sky") and ds.spec.ignore_colors == ((0, 0, 0),)
    plan = plan_classes(survey_dataset(root))
    assert plan.num_classes == 2 and plan.names == ("road", "sky")


def test_an_unknown_colour_is_refused_listing_it(tmp_path):
    root = _write(tmp_path / "camvid", {"train": [_bands([ROAD, SKY], 0), _bands([ROAD, [1, 2, 3]], 1)],
                                        "val": [_bands([ROAD, SKY], 3)]})
    _toml(root, COLOUR_TOML)
    with pytest.raises(LabelValueError) as info:
        load_dataset(root, num_classes=2)
    msg = str(info.value)
    assert "train01.png" in msg and "[1, 2, 3]" in msg and "classes" in msg


def test_colour_labels_without_a_table_are_refused_with_the_commonest_colours(tmp_path):
    root = _write(tmp_path / "camvid", {"train": [_bands([ROAD, SKY], 0)], "val": [_bands([ROAD, SKY], 1)]})
    with pytest.raises(LabelFormatError) as info:
        load_dataset(root, num_classes=2)
    msg = str(info.value)
    assert "[128, 64, 128]" in msg and "[70, 130, 180]" in msg and "color = [" in msg and "dataset.toml" in msg


# ----------------------------------------------------------------------------- layouts


def _three(root: Path, **kwargs) -> Path:
    return _write(root, {"train": [_bands([0, 1, 2], s) for s in range(2)], "val": [_bands([0, 1, 2], 3)]},
                  **kwargs)


@pytest.mark.parametrize("images, labels", [("images", "labels"), ("image", "label"), ("images", "masks"),
                                            ("images", "annotations")])
def test_split_layouts(tmp_path, images, labels):
    ds = load_dataset(_three(tmp_path / "d", images=images, labels=labels), num_classes=3)
    assert len(ds.train) == 2 and len(ds.val) == 1


def test_side_by_side_layout(tmp_path):
    ds = load_dataset(_three(tmp_path / "camvid", side_by_side=True), num_classes=3)
    assert [p.stem for p in ds.train.pairs] == ["train00", "train01"] and len(ds.val) == 1


def test_folder_names_and_suffix_from_dataset_toml(tmp_path):
    root = _three(tmp_path / "d", images="img", labels="gt_masks", suffix="_mask")
    _toml(root, 'images = "img"\nlabels = "gt_masks"\nlabel_suffix = "_mask"\n')
    ds = load_dataset(root, num_classes=3)
    assert ds.train.pairs[0].label.name == "train00_mask.png" and ds.train.pairs[0].stem == "train00"


def test_a_missing_suffix_key_is_suggested(tmp_path):
    root = _three(tmp_path / "d", suffix="_mask")
    with pytest.raises(UnpairedFileError, match='label_suffix = "_mask"'):
        load_dataset(root, num_classes=3)


def _cwfid_like(root: Path, n: int = 4) -> Path:
    """CWFID's layout: images/NNN_image.png, annotations/NNN_annotation.png (the classes) and beside them
    masks/NNN_mask.png (plant versus soil, not the classes)."""
    for i in range(n):
        _image(root / "images" / f"{i:03d}_image.png", i)
        _label(root / "annotations" / f"{i:03d}_annotation.png", _bands([0, 1, 2], i))
        _label(root / "masks" / f"{i:03d}_mask.png", _bands([0, 255], i))
    return root


def test_two_folders_that_could_hold_the_labels_are_refused_naming_both_and_the_key(tmp_path):
    root = _cwfid_like(tmp_path / "cwfid")
    with pytest.raises(data.DatasetError) as info:
        load_dataset(root, num_classes=3, val_fraction=0.25)
    msg = str(info.value)
    assert "masks/" in msg and "annotations/" in msg and 'labels = "annotations"' in msg and "dataset.toml" in msg


def test_image_and_label_suffixes_are_suggested_then_pair_the_files(tmp_path):
    root = _cwfid_like(tmp_path / "cwfid")
    _toml(root, 'labels = "annotations"\n')
    with pytest.raises(UnpairedFileError, match='image_suffix = "_image" and label_suffix = "_annotation"'):
        load_dataset(root, num_classes=3, val_fraction=0.25)
    _toml(root, 'labels = "annotations"\nimage_suffix = "_image"\nlabel_suffix = "_annotation"\n')
    ds = load_dataset(root, num_classes=3, val_fraction=0.25)
    pairs = [*ds.train.pairs, *ds.val.pairs]
    assert sorted(p.stem for p in pairs) == ["000", "001", "002", "003"]
    assert all(p.image.name == f"{p.stem}_image.png" and p.label.name == f"{p.stem}_annotation.png" for p in pairs)
    assert ds.spec.image_suffix == "_image" and DatasetSpec.from_dict(ds.spec.to_dict()) == ds.spec


@pytest.mark.parametrize("images, labels, hint", [
    (["010_image", "020_image"], ["010_annotation", "020_annotation"],
     'image_suffix = "_image" and label_suffix = "_annotation"'),  # not "0_image": a tail starts at a separator
    (["a-rgb", "b-rgb"], ["a", "b"], 'set image_suffix = "-rgb" in'),
    (["a", "b"], ["a_mask", "b_mask"], 'label_suffix = "_mask"'),
])
def test_the_suffix_hint(tmp_path, images, labels, hint):
    for i, stem in enumerate(images):
        _image(tmp_path / "images" / f"{stem}.png", i)
    for stem in labels:
        _label(tmp_path / "labels" / f"{stem}.png", _bands([0, 1], 0))
    with pytest.raises(UnpairedFileError, match=re.escape(hint)):
        data.find_pairs(tmp_path / "images", tmp_path / "labels")


@pytest.mark.parametrize("value", [3, "a/b"])
def test_a_bad_image_suffix_names_the_key(tmp_path, value):
    _toml(tmp_path, f"image_suffix = {value!r}\n".replace("'", '"'))
    with pytest.raises(SpecError, match="image_suffix"):
        read_dataset_spec(tmp_path)


def test_a_flat_layout_with_singular_names(tmp_path):
    root = _write(tmp_path / "flat", {"": [_bands([0, 1, 2], s) for s in range(4)]}, images="image", labels="mask")
    ds = load_dataset(root, num_classes=3, val_fraction=0.25)
    assert len(ds.train) == 3 and len(ds.val) == 1


def test_no_layout_lists_the_folders_found_and_the_keys(tmp_path):
    (tmp_path / "d" / "pictures").mkdir(parents=True)
    (tmp_path / "d" / "gt").mkdir()
    with pytest.raises(MissingDirectoryError) as info:
        load_dataset(tmp_path / "d", num_classes=2)
    msg = str(info.value)
    assert "pictures/" in msg and "images = " in msg and "labels = " in msg and "label_suffix" in msg


# ----------------------------------------------------------------------------- strays and warnings


def test_a_class_missing_from_val_is_warned(tmp_path):
    root = _write(tmp_path / "d", {"train": [_bands([0, 1, 2], s) for s in range(2)], "val": [_bands([0, 1], 3)]})
    with pytest.warns(LabelWarning, match="2 appear in train but not in val.*mean over classes present"):
        load_dataset(root, num_classes=3)
    plan = plan_classes(survey_dataset(root))
    assert any("appear in train but not in val" in w for w in plan.warnings)


def test_a_gap_in_the_values_is_warned_by_load_dataset(tmp_path):
    root = _write(tmp_path / "d", {"train": [_bands([0, 1, 3], s) for s in range(2)], "val": [_bands([0, 1, 3], 3)]})
    with pytest.warns(LabelWarning, match=re.escape("skip [2]")):
        load_dataset(root, num_classes=4)


def test_a_stray_value_beyond_a_gap_is_refused_naming_its_file(tmp_path):
    stray = np.full((SIZE, SIZE), 37, np.uint8)
    root = _write(tmp_path / "d", {"train": [_bands([0, 1, 2], s) for s in range(3)],
                                   "val": [_bands([0, 1, 2], 4), stray]})
    with pytest.raises(PlanError) as info:
        plan_classes(survey_dataset(root))
    msg = str(info.value)
    assert "value 37" in msg and str(root.resolve() / "val" / "labels" / "val01.png") in msg and "classes" in msg
    names = ", ".join(f'"c{i}"' for i in range(38))
    _toml(root, f"classes = [{names}]\n")  # the classes listed: 37 is a class
    assert plan_classes(survey_dataset(root)).num_classes == 38


def test_a_value_held_by_one_file_of_many_is_refused(tmp_path):
    train = [_bands([0, 1], s) for s in range(10)]
    train[4] = _bands([0, 1, 2], 0)
    root = _write(tmp_path / "d", {"train": train, "val": [_bands([0, 1], 3)]})
    with pytest.raises(PlanError, match=r"value 2 is held by only 1 of 11 label files") as info:
        plan_classes(survey_dataset(root))
    assert "train04.png" in str(info.value)


def test_fewer_than_two_classes_is_refused_listing_values_and_keys(tmp_path):
    root = _write(tmp_path / "d", {"train": [_bands([0, 255], s) for s in range(2)],
                                   "val": [np.zeros((SIZE, SIZE), np.uint8)]})
    _toml(root, "ignore_index = 255\n")
    with pytest.raises(LabelValueError, match=r"0, 255.*ignore_index.*label_map.*classes"):
        load_dataset(root, num_classes=2)


def test_a_decompression_bomb_is_reported_as_too_large(tmp_path, monkeypatch):
    _image(tmp_path / "big.png", 0)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 16x16 = 256 px > 2 x 50: Pillow's error, not a warning
    with pytest.raises(ImageTooLargeError, match=r"too large \(0.0 megapixels\)") as info:
        decode_image(tmp_path / "big.png")
    assert "corrupt" not in str(info.value) and str(tmp_path / "big.png") in str(info.value)


# ----------------------------------------------------------------------------- spec file, scale, test folders


@pytest.mark.parametrize("text, expected", [
    ("colour = 1\n", "unknown key"),
    ("label_map = { x = 1 }\n", "label_map key 'x' is not an integer"),
    ("label_map = { 3 = 300 }\n", "expected a class index 0..254 or 255"),
    ("ignore_index = -1\n", "ignore_index = -1"),
    ('classes = [{ name = "a", color = [1, 2] }]\n', r"color = \[1, 2\]"),
    ("classes = [\n", "not valid TOML"),
])
def test_a_bad_dataset_toml_is_refused_naming_file_and_key(tmp_path, text, expected):
    _toml(tmp_path, text)
    with pytest.raises(SpecError, match=expected) as info:
        read_dataset_spec(tmp_path)
    assert str(tmp_path / "dataset.toml") in str(info.value)


def test_spec_round_trips_as_plain_data(tmp_path):
    _toml(tmp_path, COLOUR_TOML + "label_map = { 1 = 0 }\nimages = \"img\"\nlabel_suffix = \"_m\"\n")
    spec = read_dataset_spec(tmp_path)
    assert DatasetSpec.from_dict(spec.to_dict()) == spec and spec.keys == ("classes", "label_map", "images",
                                                                           "label_suffix")
    assert read_dataset_spec(tmp_path / "nothing-here") == DatasetSpec()


def test_checkpoint_stores_and_loads_the_spec(tmp_path):
    root = _binary_set(tmp_path / "cells", 255)
    ds = load_dataset(root, num_classes=2)
    cfg = Config().replace(data={"num_classes": 2}, model={"num_classes": 2, "depth": 2, "base_channels": 2})
    path = save_checkpoint(tmp_path / "m.pt", build_unet(cfg.model).state_dict(), cfg, ds.mean, ds.std,
                           ("background", "foreground"), spec=ds.spec)
    assert torch.load(path, weights_only=True)["dataset_spec"]["label_map"] == {"255": 1}
    assert load_checkpoint(path).spec == ds.spec
    old = torch.load(path, weights_only=True)
    del old["dataset_spec"]
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").spec == DatasetSpec()


def test_a_trained_checkpoint_carries_the_detected_binary_spec(tmp_path):
    """fit -> save_result: trial and confirm checkpoints store the conventions training read the labels with."""
    root = _binary_set(tmp_path / "cells", 255)
    cfg = Config().replace(data={"root": str(root), "num_classes": 2},
                           model={"num_classes": 2, "depth": 2, "base_channels": 4, "max_channels": 8},
                           transforms={"crop_size": 8}, train={"epochs": 1, "batch_size": 2, "device": "cpu"})
    result = fit(cfg)
    ckpt = load_checkpoint(save_result(tmp_path / "best.pt", cfg, result, ("background", "foreground")))
    assert ckpt.spec.binary and ckpt.spec.label_map == {255: 1}


def test_scale_resizes_images_and_labels(tmp_path):
    root = _three(tmp_path / "d")
    cfg = DataConfig(root=str(root), num_classes=3, scale=0.5)
    ds = resolve_dataset(cfg)
    assert ds.scale == 0.5 and ds.train.images[0].shape == (3, 8, 8) and ds.train.masks[0].shape == (8, 8)
    assert set(torch.unique(ds.train.masks[0]).tolist()) <= {0, 1, 2}
    assert load_dataset(root, 3) is not ds  # cached per scale
    for bad in (0, 1.5, -0.5):
        with pytest.raises(ValueError, match="data.scale"):
            DataConfig(scale=bad)


def test_a_labelled_test_folder_read_with_the_stored_spec(tmp_path):
    train = load_dataset(_binary_set(tmp_path / "cells", 255), num_classes=2)
    test = _write(tmp_path / "test-set", {"test": [_bands([0, 255], 2)]}, side_by_side=True)
    split = load_labelled_folder(test, 2, spec=train.spec)
    assert set(torch.unique(split.masks[0]).tolist()) == {0, 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = _write(tmp_path / "flat-test", {"": [_bands([0, 255], 1)]}, labels="masks")
        assert set(torch.unique(load_labelled_folder(flat, 2).masks[0]).tolist()) == {0, 1}  # detected
    assert set(torch.unique(load_labelled_folder(test, 2, spec=DatasetSpec()).masks[0]).tolist()) == {0, 1}
    bad = _write(tmp_path / "bad-test", {"test": [_bands([0, 1, 4], 0)]})
    with pytest.raises(LabelValueError, match=re.escape(str(bad.resolve() / "test" / "labels" / "test00.png"))):
        load_labelled_folder(bad, 2)


def test_the_spec_is_in_the_fingerprints(tmp_path):
    from search.tracking.datasets import split_profile
    from search.tracking.fingerprint import dataset_fingerprint

    root = _binary_set(tmp_path / "cells", 255)
    assert survey_dataset(root).fingerprint()["dataset_spec"]["binary"] is True
    fingerprint = dataset_fingerprint(load_dataset(root, num_classes=2))
    assert fingerprint["dataset_spec"]["label_map"] == {"255": 1}
    assert split_profile(fingerprint, "val", ("bg", "fg"))["dataset_spec"]["binary"] is True
