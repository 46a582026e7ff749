"""The three training losses against values computed by hand on tiny tensors; 255 ignored by all three."""

from __future__ import annotations

import math

import pytest
import torch

from seg.config import LOSSES, Config
from seg.data import IGNORE_INDEX, load_dataset
from seg.losses import (
    build_loss,
    class_frequencies,
    dice_ce_loss,
    inverse_sqrt_weights,
    masked_cross_entropy,
    soft_dice_loss,
    weighted_cross_entropy,
)
from seg.train import fit
from tests.test_train import _write_blobs

IGN = IGNORE_INDEX


def _logits(*pixels: list[float]) -> torch.Tensor:
    """One image of one row: pixel i's class scores -> logits (1, K, 1, N)."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, len(pixels[0]), 1, len(pixels))


def _target(*labels: int) -> torch.Tensor:
    return torch.tensor(labels).reshape(1, 1, len(labels))  # (1, 1, N)


def test_class_weights_are_inverse_square_root_frequencies_with_mean_one():
    masks = [torch.tensor([[0, 0], [0, IGN]], dtype=torch.uint8), torch.tensor([[1, 0], [IGN, IGN]], dtype=torch.uint8)]
    freq = class_frequencies(masks, 3)  # 4 pixels of class 0, 1 of class 1, none of class 2; 255 not counted
    torch.testing.assert_close(freq, torch.tensor([0.8, 0.2, 0.0], dtype=torch.float64))
    # 1/sqrt(f) = [1.118, 2.236]; scaled by 1/(sqrt(.8) + sqrt(.2)) so that sum f*w = 1: [5/6, 5/3], absent 0
    torch.testing.assert_close(inverse_sqrt_weights(freq), torch.tensor([5 / 6, 5 / 3, 0.0]))


def test_cross_entropy_ignores_255():
    loss = masked_cross_entropy(_logits([0.0, 0.0], [9.0, -9.0]), _target(0, IGN))
    assert loss.item() == pytest.approx(math.log(2))


def test_weighted_cross_entropy_by_hand():
    logits, target = _logits([2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, -5.0, 1.0]), _target(0, 1, IGN)
    nll0, nll1 = math.log(1 + 2 * math.exp(-2)), math.log(3)
    w0, w1 = 5 / 6, 5 / 3
    loss = weighted_cross_entropy(logits, target, torch.tensor([w0, w1, 0.0]))
    assert loss.item() == pytest.approx((w0 * nll0 + w1 * nll1) / (w0 + w1), rel=1e-6)
    # Equal weights give plain CE.
    assert weighted_cross_entropy(logits, target, torch.ones(3)).item() == pytest.approx(
        masked_cross_entropy(logits, target).item(), rel=1e-6)


def test_soft_dice_over_the_classes_present():
    # p = softmax: pixel 0 (0.75, 0.25), pixel 1 (0.5, 0.5); truth 0, 1.
    logits, target = _logits([math.log(3), 0.0], [0.0, 0.0]), _target(0, 1)
    dice0, dice1 = 2 * 0.75 / (1.25 + 1), 2 * 0.5 / (0.75 + 1)  # 2/3 and 4/7
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - (dice0 + dice1) / 2, abs=1e-5)


def test_dice_ce_ignores_255_and_absent_classes():
    # One labelled pixel of class 0 at p = 0.5; class 1 has no labelled pixel, so it is not averaged in.
    logits, target = _logits([0.0, 0.0], [-7.0, 7.0]), _target(0, IGN)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - 1 / 1.5, abs=1e-5)
    assert dice_ce_loss(logits, target).item() == pytest.approx(math.log(2) + 1 / 3, abs=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_an_all_ignore_batch_costs_zero_and_stays_finite(name):
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    loss = build_loss(name, 3, [torch.tensor([[0, 1, 2]], dtype=torch.uint8)])(logits, torch.full((2, 4, 5), IGN))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("shape", [(1, 2, 3, 3), (4, 5, 8, 6)])
def test_every_loss_has_gradients_where_labelled(name, shape):
    b, k, h, w = shape
    torch.manual_seed(0)
    logits = torch.randn(shape, requires_grad=True)
    target = torch.randint(0, k, (b, h, w))
    target[:, 0] = IGN  # the first row is ignored: no gradient there
    build_loss(name, k, [target.to(torch.uint8)])(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[:, :, 0].abs().max() == 0 and logits.grad[:, :, 1:].abs().max() > 0


def test_unknown_loss_is_refused_by_name():
    with pytest.raises(ValueError, match="train.loss='focal'"):
        Config().replace(train={"loss": "focal"})


@pytest.mark.parametrize("name", ["ce_weighted", "dice_ce"])
def test_fit_trains_with_each_loss(tmp_path, name):
    root = _write_blobs(tmp_path / "blobs", n_train=8, n_val=2)
    cfg = Config.from_dict({
        "model": {"num_classes": 3, "depth": 2, "base_channels": 4, "max_channels": 8},
        "data": {"root": str(root), "num_classes": 3}, "transforms": {"crop_mode": "none"},
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-2, "device": "cpu", "loss": name}})
    result = fit(cfg, load_dataset(root, 3))
    assert len(result.history) == 2 and all(math.isfinite(r.train_loss) for r in result.history)
