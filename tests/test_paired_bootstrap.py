"""The paired bootstrap of a test-set mIoU difference (benchmarks.paired_bootstrap) and its line in the
real-data report: resamples recompute mIoU exactly as the folder's is computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.paired_bootstrap import miou_from_images, paired_difference
from benchmarks.realdata_report import goals
from search.evaluation_output import evaluation_record
from seg.data import Pair, Split
from seg.scoring import score_folder

CLASSES = ("background", "road", "car")


def _split(n: int, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    masks = tuple(torch.randint(0, 3, (6, 8), generator=gen, dtype=torch.uint8) for _ in range(n))
    images = tuple(torch.full((3, 6, 8), i, dtype=torch.uint8) for i in range(n))  # the image's index as its pixels
    pairs = tuple(Pair(f"img{i:02d}", Path(f"img{i:02d}.png"), Path(f"img{i:02d}_label.png")) for i in range(n))
    return Split(pairs, images, masks)


def _record(split: Split, wrong_pixels: int, seed: int) -> dict:
    """The evaluation.json of a model that gets `wrong_pixels` of each image's label wrong."""
    gen = torch.Generator().manual_seed(seed)

    def predict(image: torch.Tensor) -> torch.Tensor:
        truth = split.masks[int(image[0, 0, 0])]
        pred = truth.clone().flatten()
        flip = torch.randperm(pred.numel(), generator=gen)[:wrong_pixels]
        pred[flip] = (pred[flip] + 1) % 3
        return pred.view_as(truth)

    folder = score_folder(predict, split, num_classes=3)
    return evaluation_record(folder, CLASSES, folder.worst(2))


def test_the_mean_over_all_images_is_the_folders_miou() -> None:
    record = _record(_split(12), wrong_pixels=10, seed=1)
    inter = np.array([p["intersection"] for p in record["per_image"]])
    union = np.array([p["union"] for p in record["per_image"]])
    assert miou_from_images(inter, union) == pytest.approx(record["miou"], abs=1e-12)


def test_a_model_against_itself_differs_by_nothing() -> None:
    record = _record(_split(12), wrong_pixels=10, seed=1)
    d = paired_difference(record, record)
    assert (d["difference"], d["low"], d["high"]) == (0.0, 0.0, 0.0) and d["images"] == 12


def test_a_model_better_on_every_image_is_told_apart_and_a_near_tie_is_not() -> None:
    split = _split(30)
    good, bad = _record(split, wrong_pixels=2, seed=1), _record(split, wrong_pixels=20, seed=2)
    d = paired_difference(good, bad)
    assert d["difference"] == pytest.approx(good["miou"] - bad["miou"])
    assert 0 < d["low"] <= d["difference"] <= d["high"]
    tie = paired_difference(_record(split, wrong_pixels=10, seed=3), _record(split, wrong_pixels=10, seed=4))
    assert tie["low"] < 0 < tie["high"]
    line = "\n".join(goals({"search": {"test": {"evaluation": good}}, "baseline": {"test": {"evaluation": bad}}}, d))
    assert "goal (search >= baseline) met" in line and "the test images tell them apart" in line


def test_records_of_other_images_are_refused_and_old_records_give_no_interval() -> None:
    a, b = _record(_split(10), 5, 1), _record(_split(11), 5, 1)
    with pytest.raises(ValueError, match="different images"):
        paired_difference(a, b)
    old = {**a, "per_image": [{k: v for k, v in p.items() if k not in ("intersection", "union")}
                              for p in a["per_image"]]}
    assert paired_difference(old, a) is None
