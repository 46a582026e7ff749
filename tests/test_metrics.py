"""ConfusionMatrix / scores against hand-computed matrices and an independent NumPy count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg.metrics import ConfusionMatrix, SegScores, scores_from_confusion

# Ten pixels, three classes; the last two are ignored (255) although predicted as classes 0 and 1.
TARGET = [0, 0, 1, 1, 2, 2, 0, 1, 255, 255]
PRED = [0, 1, 1, 1, 2, 0, 0, 2, 0, 1]
# rows = truth, columns = prediction
EXPECTED = [
    [2, 1, 0],  # truth 0 -> predicted 0, 1, 0
    [0, 2, 1],  # truth 1 -> predicted 1, 1, 2
    [1, 0, 1],  # truth 2 -> predicted 2, 0
]


def _numpy_confusion(target: np.ndarray, pred: np.ndarray, n: int, ignore: int = 255) -> np.ndarray:
    mat = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(target.ravel().tolist(), pred.ravel().tolist()):
        if t != ignore:
            mat[t, p] += 1
    return mat


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_hand_computed_matrix_with_ignore(dtype):
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor(TARGET, dtype=dtype), torch.tensor(PRED, dtype=dtype))
    assert cm.mat.tolist() == EXPECTED
    assert cm.mat.sum().item() == 8  # the two 255 pixels are never counted
    scores = cm.compute()
    assert isinstance(scores, SegScores)
    assert scores.pixel_accuracy == pytest.approx(5 / 8)
    # IoU_c = tp / (row + col - tp)
    assert scores.iou == pytest.approx((2 / 4, 2 / 4, 1 / 3))
    assert scores.miou == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)


def test_ignored_pixels_never_counted_whatever_predicted():
    cm = ConfusionMatrix(3)
    target = torch.full((2, 4, 5), 255, dtype=torch.uint8)
    target[0, 0, 0] = 1
    pred = torch.randint(0, 3, (2, 4, 5))
    pred[0, 0, 0] = 1
    cm.update(target, pred)
    assert cm.mat.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    scores = cm.compute()
    assert scores.iou == (None, 1.0, None)
    assert scores.miou == 1.0
    assert scores.pixel_accuracy == 1.0


def test_all_ignored_gives_zero_scores_not_nan():
    cm = ConfusionMatrix(4)
    cm.update(torch.full((3, 3), 255), torch.zeros(3, 3, dtype=torch.long))
    assert cm.mat.sum().item() == 0
    scores = cm.compute()
    assert scores.miou == 0.0 and scores.pixel_accuracy == 0.0
    assert scores.iou == (None, None, None, None)


def test_miou_excludes_class_absent_from_truth_and_prediction():
    # Class 2 appears in neither the labels nor the predictions: its union is empty, so it is left out
    # of the mean (not counted as 0 or as 1) and its per-class IoU is None.
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    assert cm.mat.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    scores = cm.compute()
    assert scores.iou[0] == pytest.approx(1 / 2)
    assert scores.iou[1] == pytest.approx(2 / 3)
    assert scores.iou[2] is None
    assert scores.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores.pixel_accuracy == pytest.approx(3 / 4)


def test_class_only_predicted_counts_as_zero_iou():
    # A class that is predicted but never true has a non-empty union and IoU 0: it does lower mIoU.
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 2]))
    scores = cm.compute()
    assert scores.iou == (pytest.approx(0.5), None, 0.0)
    assert scores.miou == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [0, 1])
def test_accumulation_equals_one_update_on_concatenation(seed):
    g = torch.Generator().manual_seed(seed)
    n = 5
    chunks = []
    for shape in [(2, 7, 9), (1, 13, 4), (3, 5, 5)]:
        t = torch.randint(0, n, shape, generator=g)
        t[torch.rand(shape, generator=g) < 0.2] = 255
        p = torch.randint(0, n, shape, generator=g)
        chunks.append((t, p))
    many = ConfusionMatrix(n)
    for t, p in chunks:
        many.update(t, p)
    one = ConfusionMatrix(n)
    one.update(torch.cat([t.flatten() for t, _ in chunks]), torch.cat([p.flatten() for _, p in chunks]))
    assert torch.equal(many.mat, one.mat)
    assert many.compute() == one.compute()
    expected = sum(_numpy_confusion(t.numpy(), p.numpy(), n) for t, p in chunks)
    assert many.mat.numpy().tolist() == expected.tolist()


def test_reset_clears():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor(TARGET), torch.tensor(PRED))
    cm.reset()
    assert cm.mat.sum().item() == 0
    cm.update(torch.tensor(TARGET), torch.tensor(PRED))
    assert cm.mat.tolist() == EXPECTED


@pytest.mark.parametrize("shapes", [((2, 4, 4), (2, 4, 5)), ((8,), (2, 4)), ((1, 3, 3), (3, 3))])
def test_shape_mismatch_raises(shapes):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(shapes[0], dtype=torch.long), torch.zeros(shapes[1], dtype=torch.long))
    assert cm.mat.sum().item() == 0


def test_scores_from_confusion_direct():
    mat = torch.tensor([[5, 0, 0, 0], [0, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0]])
    scores = scores_from_confusion(mat)
    assert scores.iou == (pytest.approx(5 / 7), None, pytest.approx(3 / 5), None)
    assert scores.miou == pytest.approx((5 / 7 + 3 / 5) / 2)
    assert scores.pixel_accuracy == pytest.approx(8 / 10)


def test_perfect_prediction():
    t = torch.randint(0, 4, (2, 6, 6), generator=torch.Generator().manual_seed(3))
    cm = ConfusionMatrix(4)
    cm.update(t, t.clone())
    scores = cm.compute()
    assert scores.miou == 1.0 and scores.pixel_accuracy == 1.0
    assert torch.equal(cm.mat, torch.diag(torch.bincount(t.flatten(), minlength=4)))


@pytest.mark.parametrize("bad_pred", [4, 255, -1])
def test_out_of_range_prediction_is_rejected_or_not_counted(bad_pred):
    cm = ConfusionMatrix(3)
    try:
        cm.update(torch.tensor([0, 1]), torch.tensor([bad_pred, 1]))
    except ValueError:
        return  # rejecting it is fine
    # Otherwise the bad pixel must not turn into a correct prediction of some class.
    assert cm.mat.diag().tolist() == [0, 1, 0]
