"""Joint image/mask transforms keep image and mask aligned under every augmentation.

The test image encodes its own mask: a blocky random mask M with values 1..9 (plus one block of
255 = ignore) and an image whose three channels are all `M * 25`, with 0 where M is 255. Padding
gives images 0 and masks 255, so the encoding "image == 25 * mask, image == 0 <=> mask == 255" must
survive every geometric op. Where the image is interpolated (resize), blended pixels on block
boundaries cannot satisfy the encoding, so there the check is exact on "flat" pixels (3x3
neighbourhood constant and a multiple of 25) plus a floor on the overall agreement.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from seg.batch_augment import BatchAugment, color_jitter, random_affine, random_crop, random_flip
from seg.config import TransformConfig
from seg.data import IGNORE_INDEX
from seg.gpu_data import DeviceLoader, DeviceSplit
from seg.transforms import (
    FiveCropTrain,
    Normalize,
    build_eval_transform,
    build_train_transform,
    five_crop_box,
    five_crop_view,
    pad_collate,
)

H, W, BLOCK, STEP = 48, 40, 8, 25
NEUTRAL = dict(crop_mode="none", hflip=0.0)  # TransformConfig defaults flip and crop; switch them off


def make_pair(seed: int = 0) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randint(1, 10, (H // BLOCK, W // BLOCK), generator=g, dtype=torch.uint8)
    grid[0, 1] = IGNORE_INDEX  # one ignored block: it must travel with the image's zeros
    mask = grid.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)  # (H, W), nearest upsampling
    image = torch.where(mask == IGNORE_INDEX, 0, mask.int() * STEP).to(torch.uint8)
    return tv_tensors.Image(image.expand(3, H, W).clone()), tv_tensors.Mask(mask)


def assert_types(image, mask, shape=None):
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.uint8 and mask.dtype == torch.uint8
    assert image.ndim == 3 and image.shape[0] == 3 and mask.ndim == 2
    assert image.shape[-2:] == mask.shape
    if shape is not None:
        assert tuple(mask.shape) == tuple(shape)


def assert_exact_encoding(image, mask):
    """Nearest-only pipelines: the encoding holds on every pixel."""
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    img = image[0].int()
    m = mask.int()
    keep = m != IGNORE_INDEX
    assert torch.equal(img[keep], m[keep] * STEP)
    assert torch.equal(img == 0, ~keep)  # image 0 (fill or ignored block) <=> mask 255


def assert_interpolated_encoding(image, mask, min_agree: float = 0.8, min_flat: float = 0.3):
    """Bilinear pipelines: exact on flat pixels, and most non-ignored pixels agree within half a step."""
    img = image[0].float()
    m = mask.long()
    hi = F.max_pool2d(img[None, None], 3, stride=1, padding=1)[0, 0]
    lo = -F.max_pool2d(-img[None, None], 3, stride=1, padding=1)[0, 0]
    flat = (hi == lo) & (img.long() % STEP == 0)
    assert flat.float().mean() >= min_flat, "too few flat pixels for a meaningful check"
    expected = torch.where(img.long() == 0, IGNORE_INDEX, img.long() // STEP)
    bad = flat & (m != expected)
    assert not bad.any(), f"{int(bad.sum())} flat pixels disagree with the mask"
    keep = m != IGNORE_INDEX
    agree = ((img / STEP - m.float()).abs() < 0.5)[keep].float().mean().item()
    assert agree >= min_agree, f"only {agree:.1%} of non-ignored pixels agree with the mask"


def find_window(big: torch.Tensor, small: torch.Tensor) -> list[tuple[int, int]]:
    """All offsets where `small` occurs in `big` (2-D)."""
    h, w = small.shape
    return [(top, left) for top in range(big.shape[0] - h + 1) for left in range(big.shape[1] - w + 1)
            if torch.equal(big[top: top + h, left: left + w], small)]


def test_pair_encoding_is_self_consistent():
    image, mask = make_pair()
    assert_types(image, mask, (H, W))
    assert_exact_encoding(image, mask)
    assert set(mask.unique().tolist()) - {IGNORE_INDEX} <= set(range(1, 10))
    assert (mask == IGNORE_INDEX).sum() == BLOCK * BLOCK


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(hflip=1.0), lambda m: m.flip(-1)),
        (dict(vflip=1.0), lambda m: m.flip(-2)),
        (dict(hflip=1.0, vflip=1.0), lambda m: m.flip(-1).flip(-2)),
    ],
    ids=["hflip", "vflip", "both"],
)
def test_flips(kwargs, expected):
    t = build_train_transform(TransformConfig(**{**NEUTRAL, **kwargs}))
    image, mask = make_pair()
    out_img, out_mask = t(image, mask)
    assert_types(out_img, out_mask, (H, W))
    assert_exact_encoding(out_img, out_mask)
    assert torch.equal(out_mask, expected(mask))
    assert torch.equal(out_img, expected(image))


@pytest.mark.parametrize(
    "kwargs",
    [dict(rotation=30.0), dict(scale_min=0.7, scale_max=1.4), dict(rotation=30.0, scale_min=0.7, scale_max=1.4)],
    ids=["rotation", "scale", "rotation+scale"],
)
def test_affine_keeps_alignment(kwargs):
    t = build_train_transform(TransformConfig(**{**NEUTRAL, **kwargs}))
    changed = 0
    for seed in range(4):
        torch.manual_seed(seed)
        image, mask = make_pair(seed)
        out_img, out_mask = t(image, mask)
        assert_types(out_img, out_mask, (H, W))
        assert_interpolated_encoding(out_img, out_mask, min_agree=0.95)
        changed += not torch.equal(out_mask, mask)
    assert changed >= 3  # the op really moved pixels


def test_affine_fill_is_ignore():
    # A strong zoom-out leaves the borders empty: filled with 0 in the image and 255 in the mask.
    t = build_train_transform(TransformConfig(**{**NEUTRAL, "scale_min": 0.5, "scale_max": 0.5}))
    image, mask = make_pair()
    image[:] = torch.where(mask == IGNORE_INDEX, STEP, image)  # no ignore block: all 255 now come from fill
    mask = tv_tensors.Mask(torch.where(mask == IGNORE_INDEX, 1, mask))
    out_img, out_mask = t(image, mask)
    assert out_mask[0, :].eq(IGNORE_INDEX).all() and out_mask[:, 0].eq(IGNORE_INDEX).all()
    assert out_img[:, 0, :].eq(0).all() and out_img[:, :, 0].eq(0).all()
    assert 0.6 < (out_mask == IGNORE_INDEX).float().mean() < 0.9  # about 3/4 of the area
    assert_interpolated_encoding(out_img, out_mask, min_agree=0.95, min_flat=0.2)


def test_random_crop_is_a_window_of_both():
    t = build_train_transform(TransformConfig(**{**NEUTRAL, "crop_mode": "random", "crop_size": 32}))
    offsets = set()
    for seed in range(5):
        torch.manual_seed(seed)
        image, mask = make_pair(seed)
        out_img, out_mask = t(image, mask)
        assert_types(out_img, out_mask, (32, 32))
        assert_exact_encoding(out_img, out_mask)
        hits = find_window(mask, out_mask)
        assert hits, "the cropped mask is not a window of the original"
        assert any(torch.equal(image[:, a: a + 32, b: b + 32], out_img) for a, b in hits)
        offsets.add(hits[0])
    assert len(offsets) > 1  # the crop position is random


def test_random_crop_larger_than_image_pads_with_ignore():
    t = build_train_transform(TransformConfig(**{**NEUTRAL, "crop_mode": "random", "crop_size": 64}))
    for seed in range(3):
        torch.manual_seed(seed)
        image, mask = make_pair(seed)
        out_img, out_mask = t(image, mask)
        assert_types(out_img, out_mask, (64, 64))
        assert_exact_encoding(out_img, out_mask)
        # Only the ignored 8x8 block and padding can be 255, and padding covers at least 64*64 - 48*40.
        assert (out_mask == IGNORE_INDEX).sum() >= 64 * 64 - H * W
        # pad_if_needed pads both sides by the shortfall (16 rows, 24 columns); 24 all round contains that.
        padded = tv_tensors.Mask(F.pad(mask[None], (24, 24, 24, 24), value=IGNORE_INDEX)[0])
        assert find_window(padded, out_mask), "the crop is not a window of the 255-padded mask"


@pytest.mark.parametrize("view", range(5))
def test_five_crop_views(view):
    cfg = TransformConfig(crop_mode="five", resize=(50, 60), crop_size=32, hflip=1.0)
    image, mask = make_pair(view)
    out_img, out_mask = FiveCropTrain(cfg)(image, mask, view)
    assert_types(out_img, out_mask, (32, 32))
    resized = TF.resize(mask, [50, 60], interpolation=v2.InterpolationMode.NEAREST)
    top, left = [(0, 0), (0, 28), (18, 0), (18, 28), (9, 14)][view]
    assert torch.equal(out_mask, resized[top: top + 32, left: left + 32].flip(-1))
    assert_interpolated_encoding(out_img, out_mask, min_agree=0.75, min_flat=0.25)


def test_five_crop_without_augmentation():
    cfg = TransformConfig(crop_mode="five", resize=(50, 60), crop_size=32, hflip=0.0)
    image, mask = make_pair()
    _, out_mask = FiveCropTrain(cfg)(image, mask, 1)
    resized = TF.resize(mask, [50, 60], interpolation=v2.InterpolationMode.NEAREST)
    assert torch.equal(out_mask, resized[0:32, 28:60])


def test_train_transform_without_augmentation_is_identity():
    t = build_train_transform(TransformConfig(crop_mode="none", hflip=0.0))
    image, mask = make_pair()
    out_img, out_mask = t(image, mask)
    assert torch.equal(out_img, image) and torch.equal(out_mask, mask)


def test_color_jitter_leaves_geometry_and_mask():
    t = build_train_transform(TransformConfig(**{**NEUTRAL, "color_jitter": 0.5}))
    changed = 0
    for seed in range(3):
        torch.manual_seed(seed)
        image, mask = make_pair(seed)
        out_img, out_mask = t(image, mask)
        assert_types(out_img, out_mask, (H, W))
        assert torch.equal(out_mask, mask)
        changed += not torch.equal(out_img, image)
    assert changed >= 2


def test_everything_together_keeps_alignment():
    cfg = TransformConfig(resize=(56, 44), rotation=30.0, scale_min=0.7, scale_max=1.4, crop_mode="random",
                          crop_size=32, hflip=0.5, vflip=0.5)
    t = build_train_transform(cfg)
    for seed in range(4):
        torch.manual_seed(seed)
        image, mask = make_pair(seed)
        out_img, out_mask = t(image, mask)
        assert_types(out_img, out_mask, (32, 32))
        assert_interpolated_encoding(out_img, out_mask, min_agree=0.7, min_flat=0.15)


@pytest.mark.parametrize("size", [(50, 60), (96, 80), (23, 71), (24, 20)])
def test_eval_resize_uses_nearest_for_masks(size):
    t = build_eval_transform(TransformConfig(resize=size))
    image, mask = make_pair(1)
    out_img, out_mask = t(image, mask)
    assert_types(out_img, out_mask, size)
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())
    if size[0] >= H and size[1] >= W:  # upscaling: every class survives, with about the same area share
        assert set(out_mask.unique().tolist()) == set(mask.unique().tolist())
        assert_interpolated_encoding(out_img, out_mask, min_agree=0.8)
    if size == (96, 80):  # an exact 2x nearest upscale is pixel repetition
        assert torch.equal(out_mask, mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_eval_transform_without_resize_is_identity():
    t = build_eval_transform(TransformConfig(resize=None))
    image, mask = make_pair()
    out_img, out_mask = t(image, mask)
    assert torch.equal(out_img, image) and torch.equal(out_mask, mask)


@pytest.mark.parametrize(
    "h, w, size, boxes",
    [
        (50, 60, 32, [(0, 0), (0, 28), (18, 0), (18, 28), (9, 14)]),
        (40, 40, 40, [(0, 0)] * 5),
        (33, 20, 20, [(0, 0), (0, 0), (13, 0), (13, 0), (6, 0)]),
    ],
)
def test_five_crop_box(h, w, size, boxes):
    assert [five_crop_box(h, w, size, v) for v in range(5)] == boxes


def test_five_crop_view_matches_torchvision():
    image, mask = make_pair()
    image = tv_tensors.Image(TF.resize(image, [50, 60], antialias=True))
    mask = tv_tensors.Mask(TF.resize(mask, [50, 60], interpolation=v2.InterpolationMode.NEAREST))
    tv_crops = TF.five_crop(image, [32, 32])  # tl, tr, bl, br, centre
    for view in range(5):
        img_crop, mask_crop = five_crop_view(image, mask, 32, view)
        assert torch.equal(img_crop, tv_crops[view])
        top, left = five_crop_box(50, 60, 32, view)
        assert torch.equal(mask_crop, mask[top: top + 32, left: left + 32])


@pytest.mark.parametrize("h, w, size", [(50, 60, 51), (50, 60, 61), (31, 100, 32)])
def test_five_crop_box_too_large_raises(h, w, size):
    with pytest.raises(ValueError) as info:
        five_crop_box(h, w, size, 0)
    assert str(size) in str(info.value) and f"{h}x{w}" in str(info.value)


def test_pad_collate():
    g = torch.Generator().manual_seed(0)
    sizes = [(10, 7), (6, 12), (9, 9)]
    batch = [(torch.randint(1, 256, (3, h, w), generator=g, dtype=torch.uint8),
              torch.randint(0, 10, (h, w), generator=g, dtype=torch.uint8)) for h, w in sizes]
    images, masks = pad_collate(batch)
    assert images.shape == (3, 3, 10, 12) and images.dtype == torch.uint8
    assert masks.shape == (3, 10, 12) and masks.dtype == torch.uint8
    for i, ((img, mask), (h, w)) in enumerate(zip(batch, sizes)):
        assert torch.equal(images[i, :, :h, :w], img)
        assert torch.equal(masks[i, :h, :w], mask)
        assert images[i, :, h:, :].eq(0).all() and images[i, :, :, w:].eq(0).all()
        assert masks[i, h:, :].eq(IGNORE_INDEX).all() and masks[i, :, w:].eq(IGNORE_INDEX).all()
        assert (masks[i] == IGNORE_INDEX).sum() == 10 * 12 - h * w


def test_pad_collate_same_size_is_stack():
    batch = [make_pair(s) for s in range(2)]
    images, masks = pad_collate([(i.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)) for i, m in batch])
    assert torch.equal(images, torch.stack([i for i, _ in batch]))
    assert torch.equal(masks, torch.stack([m for _, m in batch]))


def test_normalize():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[0, :, 0, 0] = 0
    x[0, :, 0, 1] = 255
    out = Normalize(mean, std)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    ref = (x.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[0, :, 0, 0].double(), -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std))
    assert torch.equal(Normalize((0.0,) * 3, (1.0,) * 3)(x), x.float() / 255)


# --- whole-batch device augmentation (seg.gpu_data), run here on CPU tensors -------------------------


def make_batch(n: int = 4, sizes: tuple[tuple[int, int], ...] | None = None) -> DeviceSplit:
    """n encoded pairs of different sizes, pad-stacked like `stack_split` does (images 0, masks 255)."""
    sizes = sizes or tuple((H - 8 * (i % 2), W - 8 * (i % 3 == 2)) for i in range(n))
    images = torch.zeros((n, 3, H, W), dtype=torch.uint8)
    masks = torch.full((n, H, W), IGNORE_INDEX, dtype=torch.uint8)
    for i, (h, w) in enumerate(sizes):
        image, mask = make_pair(seed=i)
        images[i, :, :h, :w] = image[:, :h, :w]
        masks[i, :h, :w] = mask[:h, :w]
    return DeviceSplit(images, masks, torch.tensor(sizes, dtype=torch.int64), sizes)


def each_sample(images: torch.Tensor, masks: torch.Tensor):
    for i in range(images.shape[0]):
        yield tv_tensors.Image(images[i]), tv_tensors.Mask(masks[i])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batch_random_crop_is_a_window_inside_each_samples_own_size():
    split = make_batch(6)
    images, masks = random_crop(split.images, split.masks, split.sizes, 24, gen())
    assert images.shape == (6, 3, 24, 24) and masks.shape == (6, 24, 24)
    assert images.dtype == torch.uint8 and masks.dtype == torch.uint8
    for i, (image, mask) in enumerate(each_sample(images, masks)):
        assert_exact_encoding(image, mask)
        h, w = split.host_sizes[i]
        # The window lies inside the sample's own (unpadded) area: found there, same offset in the image.
        offsets = find_window(split.masks[i, :h, :w], mask)
        assert offsets and any(torch.equal(split.images[i, :, top:top + 24, left:left + 24], image)
                               for top, left in offsets)


def test_batch_random_crop_offsets_vary_and_follow_the_generator():
    split = make_batch(8, sizes=((H, W),) * 8)
    a = random_crop(split.images, split.masks, split.sizes, 16, gen(1))
    b = random_crop(split.images, split.masks, split.sizes, 16, gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    starts = {tuple(find_window(split.masks[i], a[1][i])[0]) for i in range(8)}
    assert len(starts) > 1, "every sample got the same crop offset"


def test_batch_random_crop_larger_than_sample_pads_with_ignore():
    split = make_batch(2, sizes=((16, 16), (16, 16)))
    images, masks = random_crop(split.images, split.masks, split.sizes, 24, gen())
    for image, mask in each_sample(images, masks):
        assert_exact_encoding(image, mask)
        assert (mask == IGNORE_INDEX).sum() >= 24 * 24 - 16 * 16


def test_batch_random_crop_refuses_a_store_smaller_than_the_crop():
    split = make_batch(2)
    with pytest.raises(ValueError, match="smaller than the crop"):
        random_crop(split.images, split.masks, split.sizes, H + 8, gen())


@pytest.mark.parametrize("degrees,scale", [(30.0, (1.0, 1.0)), (0.0, (0.6, 1.4)), (45.0, (0.7, 1.3))])
def test_batch_affine_keeps_alignment_nearest_and_fills_ignore(degrees, scale):
    split = make_batch(6, sizes=((H, W),) * 6)
    images, masks = random_affine(split.images, split.masks, degrees, scale, gen())
    assert images.shape == split.images.shape and masks.dtype == torch.uint8
    for image, mask in each_sample(images, masks):
        assert_exact_encoding(image, mask)  # nearest: exact labels, image 0 <=> mask 255
        assert set(mask.unique().tolist()) <= set(range(1, 10)) | {IGNORE_INDEX}
    if degrees >= 30:  # a rotated frame leaves its corners outside the source
        assert (masks[:, 0, 0] == IGNORE_INDEX).any()


def test_batch_affine_identity_settings_change_nothing():
    split = make_batch(3, sizes=((H, W),) * 3)
    images, masks = random_affine(split.images, split.masks, 0.0, (1.0, 1.0), gen())
    assert torch.equal(images, split.images) and torch.equal(masks, split.masks)


@pytest.mark.parametrize("horizontal", [True, False])
def test_batch_flip_moves_image_and_mask_together(horizontal):
    split = make_batch(4, sizes=((H, W),) * 4)
    dim = -1 if horizontal else -2
    images, masks = random_flip(split.images, split.masks, 1.0, horizontal, gen())
    assert torch.equal(images, split.images.flip(dim)) and torch.equal(masks, split.masks.flip(dim))
    images, masks = random_flip(split.images, split.masks, 0.0, horizontal, gen())
    assert torch.equal(images, split.images) and torch.equal(masks, split.masks)
    images, masks = random_flip(split.images, split.masks, 0.5, horizontal, gen(3))
    flipped = [torch.equal(masks[i], split.masks[i].flip(dim)) for i in range(4)]
    for i in range(4):
        assert torch.equal(images[i], split.images[i].flip(dim) if flipped[i] else split.images[i])


def test_batch_color_jitter_changes_colours_only_within_uint8():
    split = make_batch(4, sizes=((H, W),) * 4)
    out = color_jitter(split.images, 0.4, gen())
    assert out.dtype == torch.uint8 and out.shape == split.images.shape and not torch.equal(out, split.images)
    assert torch.equal(color_jitter(split.images, 0.0, gen()), split.images)  # factors all 1: identity


def test_batch_augment_everything_together_keeps_alignment():
    cfg = TransformConfig(crop_mode="random", crop_size=24, hflip=0.5, vflip=0.5, rotation=20.0, scale_min=0.8,
                          scale_max=1.2)
    split = make_batch(6)
    images, masks = BatchAugment(cfg, gen())(split.images, split.masks, split.sizes)
    assert images.shape == (6, 3, 24, 24)
    for image, mask in each_sample(images, masks):
        assert_exact_encoding(image, mask)


def test_device_loader_train_epoch_and_eval_batches():
    split = make_batch(7)
    cfg = TransformConfig(crop_mode="random", crop_size=16, hflip=0.5)
    train = DeviceLoader(split, 3, seed=0, augment=cfg, shuffle=True, drop_last=True)
    batches = list(train)
    assert len(train) == len(batches) == 2 and all(b[0].shape == (3, 3, 16, 16) for b in batches)
    again = list(DeviceLoader(split, 3, seed=0, augment=cfg, shuffle=True, drop_last=True))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again)), "same seed, different batches"
    val = list(DeviceLoader(split, 3, seed=0))
    assert [b[1].shape[0] for b in val] == [3, 3, 1]
    for k, (images, masks) in enumerate(val):  # in order, cut to the batch's largest image, like pad_collate
        ref_images, ref_masks = pad_collate([(split.images[i, :, :h, :w], split.masks[i, :h, :w])
                                             for i, (h, w) in enumerate(split.host_sizes) if i // 3 == k])
        assert torch.equal(images, ref_images) and torch.equal(masks, ref_masks)
