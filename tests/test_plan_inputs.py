"""What the planner does with awkward input: clear errors naming the file or value (no classes, a
classes.txt that disagrees with the labels, images too small for any UNet, a dataset too large for
memory), a warning for label values with gaps, a flat folder, and the loss rule's threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.plan.decisions import PlanError
from search.plan.loss import plan_loss
from search.plan.planner import PlanRequest, make_plan
from search.plan.survey import Survey, survey_dataset
from tests.plankit import labelled_folder


def _plan(root: Path, **kwargs):
    return make_plan(PlanRequest(data=str(root), device="cuda", memory_gb=8, **kwargs))


def _labels(values: list[int], n: int = 4, size: tuple[int, int] = (70, 80)) -> list[np.ndarray]:
    """n label arrays, each split into bands of the given values."""
    out = []
    for _ in range(n):
        label = np.zeros(size, np.uint8)
        for i, v in enumerate(values):
            label[:, i * size[1] // len(values):] = v
        out.append(label)
    return out


def test_labels_without_classes_are_refused(tmp_path):
    root = labelled_folder(tmp_path / "blank", _labels([255]))
    with pytest.raises(PlanError, match="the labels have no classes") as info:
        _plan(root)
    assert str(root.resolve()) in str(info.value) and "255" in str(info.value)


def test_training_labels_without_classes_are_refused(tmp_path):
    labels = [*_labels([255], n=3), *_labels([0, 1], n=1)]  # classes only in val
    with pytest.raises(PlanError, match="the training labels have no classes") as info:
        _plan(labelled_folder(tmp_path / "val-only", labels))
    assert "train/labels/000.png" in str(info.value)


@pytest.mark.parametrize("lines", [2, 4])
def test_a_classes_file_that_disagrees_with_the_labels_is_refused(tmp_path, lines):
    root = labelled_folder(tmp_path / "named", _labels([0, 1, 2]))
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(lines)) + "\n")
    with pytest.raises(PlanError, match=f"names {lines} classes but the labels use values 0-2, i.e. 3") as info:
        _plan(root)
    assert str(root.resolve() / "classes.txt") in str(info.value)


def test_images_smaller_than_the_smallest_unet_are_refused(tmp_path):
    sizes = [(12, 30), (14, 20), (13, 25), (30, 40)]  # the last one is val
    labels = [_labels([0, 1], n=1, size=s)[0] for s in sizes]
    with pytest.raises(PlanError, match="3 training image.s. are smaller than the smallest UNet") as info:
        _plan(labelled_folder(tmp_path / "small", labels))
    assert "train/labels/000.png (12x30)" in str(info.value) and ">= 16 px" in str(info.value)


def test_varied_sizes_whose_median_is_too_small_are_refused(tmp_path):
    sizes = [(8, 10), (10, 12), (12, 12), (90, 100), (30, 40)]  # short sides vary widely: the resize would be 16x16
    labels = [_labels([0, 1], n=1, size=s)[0] for s in sizes]
    with pytest.raises(PlanError, match=r"the median image is \d+x\d+ px .* needs >= 16 px"):
        _plan(labelled_folder(tmp_path / "varied", labels))


def test_label_values_with_gaps_warn(tmp_path):
    plan = _plan(labelled_folder(tmp_path / "gaps", _labels([0, 1, 3])))
    assert plan.value("data", "num_classes") == 4
    assert any("skip [2]" in w for w in plan.warnings)


def test_a_flat_folder_gets_a_validation_share(tmp_path):
    root = tmp_path / "flat"
    labelled_folder(root / "tmp", _labels([0, 1], n=6), n_val=0)
    (root / "tmp" / "train").rename(root / "x")
    (root / "x" / "images").rename(root / "images")
    (root / "x" / "labels").rename(root / "labels")
    plan = _plan(root)
    assert plan.value("data", "val_fraction") == 0.2
    assert plan.fingerprint["counts"] == {"train": 5, "val": 1}


def test_a_dataset_too_large_for_memory_is_refused_with_its_figures(tmp_path):
    root = labelled_folder(tmp_path / "big", _labels([0, 1], n=4))
    decoded = 4 * 70 * 80 * 4  # 4 images, 3 bytes + 1 label byte a pixel
    assert survey_dataset(root).decoded_bytes() == decoded
    ok = _plan(root, ram_gb=1.0)
    assert any("fits" in d.why and d.key is None and d.table == "data" for d in ok.decisions)
    with pytest.raises(PlanError, match="does not fit") as info:
        _plan(root, ram_gb=decoded / 1e9)  # half of it is what a search may use
    text = str(info.value)
    assert f"{decoded / 1e9:.3g} GB" in text and "Downscale" in text and "longest side 80 -> 56 px" in text


def _survey(pixels: list[int]) -> Survey:
    counts = [0] * 256
    counts[: len(pixels)] = pixels
    return Survey("x", None, None, ((64, 64),), (), ("a.png",), tuple(counts), frozenset())


@pytest.mark.parametrize("pixels, searched", [([100, 10], False), ([101, 10], True), ([500, 0, 60], False),
                                              ([97, 2, 1], True), ([5], False)])
def test_the_loss_is_searched_only_above_ten_to_one(pixels, searched):
    decision = plan_loss(_survey(pixels), len(pixels))
    assert (decision.value != "ce") == searched, decision.why
