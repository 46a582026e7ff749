"""Sliding-window inference (seg.sliding): windows, blending, the pixel limit, and tiled validation in `fit`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import seg.sliding
from seg.config import Config
from seg.data import load_dataset
from seg.memory import check_training_memory, estimate_training_memory, estimate_validation_memory
from seg.model import build_unet
from seg.runtime import precision_for
from seg.sliding import (
    MIN_EVAL_PIXELS,
    Tiling,
    eval_max_pixels,
    needs_tiles,
    sliding_window_logits,
    tile_side,
    validation_pixels,
    window_starts,
)
from seg.train import evaluate, fit
from seg.transforms import Normalize, pad_collate

K = 3


def _pointwise() -> nn.Module:
    """Logits at a pixel depend on that pixel alone, so tiles blended by any weights equal the whole image."""
    torch.manual_seed(0)
    return nn.Conv2d(3, K, kernel_size=1)


class Recorder:
    """A forward that records the shape of every input it is given, then runs the model."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.shapes = model, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (9, 100), (1, 1), (20, 20), (33, 17), (65, 97)])
@pytest.mark.parametrize("tile, per_forward", [(32, 1), (16, 3), (24, 100)])
def test_sliding_window_equals_the_whole_image_for_a_pointwise_model(size, tile, per_forward):
    model = _pointwise()
    x = torch.randn(2, 3, *size)  # (B, 3, H, W)
    seen = Recorder(model)
    with torch.no_grad():
        whole = model(x)
        tiled = sliding_window_logits(seen, x, tile, tiles_per_forward=per_forward)
    assert tiled.shape == (2, K, *size) and tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    assert all(h <= tile and w <= tile and n <= 2 * per_forward for n, _, h, w in seen.shapes)
    if max(size) > tile:
        assert len(seen.shapes) > 1 or per_forward > 1


@pytest.mark.parametrize("size, tile", [(100, 32), (33, 32), (32, 32), (10, 32), (97, 16), (1000, 64)])
def test_windows_cover_the_side_with_half_a_tile_of_overlap(size, tile):
    starts = window_starts(size, tile, overlap=0.5)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if size <= tile:
        assert starts == [0]
        return
    assert starts[-1] == size - tile  # the last window touches the border
    assert all(b - a <= tile // 2 for a, b in zip(starts, starts[1:]))  # overlap of at least half a tile


def test_gaussian_blend_favours_the_tile_centre():
    # A "model" whose logit is 1 near its tile's border and 0 at the centre: with Gaussian weights,
    # pixels that are the centre of one tile and the border of another lean towards the centre's 0.
    def border(x: torch.Tensor) -> torch.Tensor:
        out = torch.ones(x.shape[0], 1, *x.shape[-2:])
        out[..., 8:24, 8:24] = 0
        return out

    x = torch.zeros(1, 3, 32, 64)
    blended = sliding_window_logits(border, x, 32)  # windows at 0, 16, 32
    assert blended[0, 0, 16, 32].item() < 0.2  # the centre of the middle window
    uniform = torch.tensor([1.0, 0.0, 1.0]).mean()  # what plain averaging of the three windows gives
    assert blended[0, 0, 16, 24].item() < uniform


def _cfg(**train) -> Config:
    return Config.from_dict({"model": {"num_classes": K, "depth": 3, "base_channels": 4, "max_channels": 8},
                             "data": {"num_classes": K}, "transforms": {"crop_size": 30},
                             "train": {"batch_size": 2, **train}})


def test_pixel_limit_default_and_key():
    cfg = _cfg()
    assert tile_side(cfg) == 28  # the crop, rounded down to the divisor 4
    assert eval_max_pixels(cfg) == MIN_EVAL_PIXELS  # 2 x 28 x 28 is below the floor
    assert eval_max_pixels(_cfg(batch_size=2048)) == 2048 * 28 * 28  # one training step's pixels
    assert eval_max_pixels(_cfg(eval_max_pixels=1000)) == 1000
    assert not needs_tiles(1024, 1024, cfg) and needs_tiles(1025, 1024, cfg) and needs_tiles(3000, 4000, cfg)
    assert Config.from_dict(_cfg(eval_max_pixels=1000).to_dict()).train.eval_max_pixels == 1000
    with pytest.raises(ValueError, match="eval_max_pixels"):
        _cfg(eval_max_pixels=-1)


@pytest.mark.parametrize("size", [(64, 96), (37, 53), (20, 300), (8, 8)])
def test_validation_pixels_count_what_the_model_runs(size):
    whole, tiny = _cfg(), _cfg(eval_max_pixels=100)
    model = build_unet(tiny.model).eval()
    seen = Recorder(model)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        Tiling(100, tile_side(tiny)).logits(seen, x)
    # the model pads each input to a multiple of 4 inside: count what it runs
    padded = sum(n * -(-h // 4) * 4 * -(-w // 4) * 4 for n, _, h, w in seen.shapes)
    assert validation_pixels(*size, tiny) == padded
    assert validation_pixels(*size, whole) == -(-size[0] // 4) * 4 * -(-size[1] // 4) * 4
    resized = Config.from_dict({**whole.to_dict(), "transforms": {"crop_size": 30, "resize": [40, 40]}})
    assert validation_pixels(*size, resized) == 40 * 40


def test_a_batch_over_the_limit_runs_in_groups_of_images():
    tiling = Tiling(max_pixels=3 * 20 * 20, tile=16)
    model = _pointwise()
    seen = Recorder(model)
    x = torch.randn(8, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(tiling.logits(seen, x), model(x))
    assert [s[0] for s in seen.shapes] == [3, 3, 2] and all(s[-2:] == (20, 20) for s in seen.shapes)


def test_validation_memory_grows_with_the_image_and_is_bounded_by_tiles():
    cfg = _cfg()
    small, big = (estimate_validation_memory(cfg, s, s, amp=False) for s in (64, 4000))
    assert small < big
    # Tiles bound the forward: a 4000 px image costs about its logits buffers, not a whole-image forward.
    tiny_limit = estimate_validation_memory(_cfg(eval_max_pixels=28 * 28), 4000, 4000, amp=False)
    assert tiny_limit <= big


# ------------------------------------------------------------------ tiled validation inside fit


def _write_blobs(root, n, h, w, split, seed):
    """Bright squares are class 1, dark disks class 2, on mid-grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    for i in range(n):
        img = np.full((h, w, 3), 128, np.uint8)
        lab = np.zeros((h, w), np.uint8)
        for _ in range(max(1, h * w // 1024)):
            cy, cx = rng.integers(6, h - 6), rng.integers(6, w - 6)
            sq = (abs(yy - cy) < 5) & (abs(xx - cx) < 5)
            img[sq], lab[sq] = 230, 1
            dy, dx = rng.integers(6, h - 6), rng.integers(6, w - 6)
            disk = (yy - dy) ** 2 + (xx - dx) ** 2 < 25
            img[disk], lab[disk] = 20, 2
        img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / split / "images" / f"{i:03d}.png")
        Image.fromarray(lab).save(root / split / "labels" / f"{i:03d}.png")


@pytest.fixture(scope="module")
def large_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("large-val")
    _write_blobs(root, 12, 32, 32, "train", seed=0)
    _write_blobs(root, 2, 64, 96, "val", seed=1)
    return root


@pytest.mark.parametrize("on_device", [True, False])
def test_fit_validates_a_large_image_in_tiles(large_val, on_device, monkeypatch):
    limit = 32 * 32  # 64x96 val images exceed it: tiles of the 32 px crop
    cfg = Config.from_dict({
        "model": {"num_classes": K, "depth": 2, "base_channels": 8, "max_channels": 16},
        "data": {"root": str(large_val), "num_classes": K},
        "transforms": {"crop_mode": "random", "crop_size": 32},
        "train": {"epochs": 3, "batch_size": 4, "lr": 1e-2, "device": "cpu", "eval_max_pixels": limit}})
    data = load_dataset(large_val, K)
    windows = []
    real = seg.sliding.sliding_window_logits

    def spy(forward, x, tile, overlap=0.5, **kwargs):  # calls through; records what validation tiled
        windows.append((tuple(x.shape), tile))
        return real(forward, x, tile, overlap, **kwargs)

    monkeypatch.setattr(seg.sliding, "sliding_window_logits", spy)
    result = fit(cfg, data, data_on_device=on_device)
    assert result.data_on_device == on_device
    assert windows and all(shape[-2:] == (64, 96) and shape[0] == 1 and tile == 32 for shape, tile in windows)
    assert len(windows) == 3 * 2  # each of the 2 val images, every epoch
    best = result.history[result.best_epoch]
    assert 0.0 < best.val_miou <= 1.0 and np.isfinite(best.val_loss)
    assert result.history[-1].val_miou > result.history[0].val_miou  # it learns, scored in tiles

    # The tiled scores are what `evaluate` gives with the same tiling on the best weights, and close to
    # whole-image validation of those weights.
    monkeypatch.setattr(seg.sliding, "sliding_window_logits", real)
    prec = precision_for(cfg, torch.device("cpu"))
    model = build_unet(cfg.model).to(memory_format=prec.memory_format)
    model.load_state_dict(result.best_state)
    norm = Normalize(result.mean, result.std)
    batches = [pad_collate([(img, msk) for img, msk in zip(data.val.images, data.val.masks)])]
    _, tiled = evaluate(model, norm, batches, prec, K, seg.sliding.tiling_for(cfg))
    _, whole = evaluate(model, norm, batches, prec, K)
    assert tiled.confusion == result.best_confusion
    assert abs(tiled.miou - whole.miou) < 0.05


def test_memory_check_counts_validation_of_the_largest_val_image(large_val):
    cfg = Config.from_dict({
        "model": {"num_classes": K, "depth": 2, "base_channels": 8, "max_channels": 16},
        "data": {"root": str(large_val), "num_classes": K},
        "transforms": {"crop_mode": "random", "crop_size": 32}, "train": {"batch_size": 4, "device": "cpu"}})
    data, cpu = load_dataset(large_val, K), torch.device("cpu")
    amp = precision_for(cfg, cpu).amp_dtype is not None
    train = estimate_training_memory(cfg, 32, 32, amp).total
    val = estimate_validation_memory(cfg, 64, 96, amp)
    assert val > train  # eight whole 64x96 images per forward against four 32 px crops
    refused = check_training_memory(cfg, data, cpu, limit=(train + val) // 2)
    assert refused.refused and "largest val image (64x96)" in refused.refused and refused.estimate == val
    fits = check_training_memory(cfg, data, cpu, limit=val)
    assert fits.refused is None and fits.estimate == val
    # Tiles make it fit where whole images do not.
    tiled = cfg.replace(train={"eval_max_pixels": 32 * 32})
    assert check_training_memory(tiled, data, cpu, limit=(train + val) // 2).refused is None
