"""UNet shapes, gradients, norms, derived channels, the report's architecture and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seg.checkpoint import load_checkpoint, save_checkpoint
from seg.config import Config, DataConfig, ModelConfig
from seg.model import DoubleConv, UNet, build_unet, count_parameters, forward_flops

UPSAMPLES = ("transpose", "bilinear", "pixelshuffle")
SIZES = [(37, 53), (64, 64), (17, 90)]


def tiny(**kwargs) -> ModelConfig:
    base = dict(in_channels=3, num_classes=3, depth=3, base_channels=4, max_channels=32)
    return ModelConfig(**{**base, **kwargs})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("upsample", UPSAMPLES)
@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_forward_shape_and_backward(depth, upsample, size):
    cfg = tiny(depth=depth, upsample=upsample)
    model = build_unet(cfg)
    x = torch.randn(2, 3, *size)
    logits = model(x)
    assert logits.shape == (2, cfg.num_classes, *size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    target = torch.randint(0, cfg.num_classes, (2, *size))
    nn.functional.cross_entropy(logits, target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # The deepest level really is reached: its parameters get a non-zero gradient.
    deepest = model.encoders[-1]
    assert any(p.grad.abs().sum() > 0 for p in deepest.parameters())


@pytest.mark.parametrize("depth", [2, 4])
def test_output_crop_matches_input_region(depth):
    # An odd input is zero-padded at the bottom/right to a multiple of 2**(depth-1) and the logits are
    # cropped back, so they equal the top-left crop of the logits of the explicitly padded input.
    cfg = tiny(depth=depth, norm="none")
    model = build_unet(cfg).eval()
    x = torch.randn(1, 3, 21, 30)
    div = cfg.size_divisor
    ph, pw = (-21) % div, (-30) % div
    padded = nn.functional.pad(x, (0, pw, 0, ph))
    with torch.no_grad():
        assert torch.equal(model(x), model(padded)[..., :21, :30])


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_norm_and_dropout_build_and_run(norm, dropout):
    cfg = tiny(norm=norm, dropout=dropout, base_channels=6, max_channels=24)
    model = build_unet(cfg)
    x = torch.randn(2, 3, 20, 28)
    out = model(x)
    assert out.shape == (2, 3, 20, 28)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval is deterministic (dropout off)

    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 2 * (2 * cfg.depth - 1)
    for conv in convs3:
        assert (conv.bias is not None) == (norm == "none")
    kinds = {type(m) for m in model.modules()}
    assert (nn.BatchNorm2d in kinds) == (norm == "batch")
    assert (nn.GroupNorm in kinds) == (norm == "group")
    assert (nn.Dropout2d in kinds) == (dropout > 0)
    if dropout > 0:
        assert all(m.p == dropout for m in model.modules() if isinstance(m, nn.Dropout2d))


@pytest.mark.parametrize("channels", [6, 12, 7, 24, 1])
def test_group_norm_any_width(channels):
    block = DoubleConv(3, channels, "group", 0.0)
    gn = [m for m in block if isinstance(m, nn.GroupNorm)]
    assert len(gn) == 2 and all(channels % m.num_groups == 0 and m.num_groups <= 8 for m in gn)
    assert block(torch.randn(2, 3, 5, 5)).shape == (2, channels, 5, 5)


def test_dropout_active_in_train_mode():
    model = build_unet(tiny(norm="none", dropout=0.5))
    model.train()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(depth=5, base_channels=16, max_channels=64), (16, 32, 64, 64, 64)),
        (dict(depth=4, base_channels=16, max_channels=256), (16, 32, 64, 128)),
        (dict(depth=3, base_channels=5, max_channels=12), (5, 10, 12)),
        (dict(depth=1, base_channels=8, max_channels=8), (8,)),
        (dict(depth=6, base_channels=32, max_channels=1024), (32, 64, 128, 256, 512, 1024)),
    ],
)
def test_derived_channels(kwargs, expected):
    cfg = ModelConfig(**kwargs)
    assert cfg.level_channels() == expected
    with torch.device("meta"):
        model = UNet(cfg)
    assert [enc[0].out_channels for enc in model.encoders] == list(expected)
    assert model.head.in_channels == expected[0]


def test_explicit_channels():
    cfg = ModelConfig(depth=3, channels=[8, 12, 20], num_classes=4)
    assert cfg.level_channels() == (8, 12, 20)
    model = build_unet(cfg)
    assert [enc[0].out_channels for enc in model.encoders] == [8, 12, 20]
    assert model(torch.randn(2, 3, 19, 23)).shape == (2, 4, 19, 23)


@pytest.mark.parametrize("channels", [[8, 16], [8, 16, 32, 64]])
def test_wrong_channel_count_raises(channels):
    with pytest.raises(ValueError) as info:
        ModelConfig(depth=3, channels=channels)
    message = str(info.value)
    assert "depth=3" in message and "3 entries" in message
    assert f"has {len(channels)} entries" in message


@pytest.mark.parametrize(
    "kwargs, allowed",
    [
        (dict(upsample="nearest"), ("transpose", "bilinear", "pixelshuffle")),
        (dict(norm="layer"), ("batch", "group", "none")),
    ],
)
def test_invalid_choice_names_allowed_values(kwargs, allowed):
    with pytest.raises(ValueError) as info:
        ModelConfig(**kwargs)
    message = str(info.value)
    assert repr(next(iter(kwargs.values()))) in message
    for value in allowed:
        assert value in message


@pytest.mark.parametrize(
    "kwargs",
    [dict(depth=0), dict(depth=9), dict(base_channels=0), dict(base_channels=64, max_channels=32), dict(dropout=0.95),
     dict(depth=2, channels=[4, 0])],
)
def test_invalid_model_config_raises(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


REPORT = ModelConfig(depth=6, base_channels=32, max_channels=1024, upsample="transpose", norm="batch", num_classes=10)


def test_report_architecture_parameter_count():
    assert REPORT.level_channels() == (32, 64, 128, 256, 512, 1024)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = UNet(REPORT)
    assert count_parameters(model) == 31_100_810
    assert round(count_parameters(model) / 1e6, 1) == 31.1


def _expected_flops_transpose(cfg: ModelConfig, h: int, w: int) -> float:
    """Independent count: 2 x MACs of every conv of a transpose-upsampling UNet on a divisible input."""
    chs = cfg.level_channels()
    total, in_ch = 0.0, cfg.in_channels
    for i, c in enumerate(chs):
        px = (h >> i) * (w >> i)
        total += 2 * px * 9 * (in_ch * c + c * c)
        in_ch = c
    for i in range(len(chs) - 2, -1, -1):
        px = (h >> i) * (w >> i)
        total += 2 * px * chs[i + 1] * chs[i]  # 2x2 stride-2 transposed conv: k*k*in*out per input pixel
        total += 2 * px * 9 * (2 * chs[i] * chs[i] + chs[i] * chs[i])
    total += 2 * h * w * chs[0] * cfg.num_classes
    return total


def test_report_architecture_flops():
    flops = forward_flops(REPORT, 256, 256)
    assert flops == pytest.approx(29.9e9, rel=0.01)
    assert flops == pytest.approx(_expected_flops_transpose(REPORT, 256, 256), rel=1e-9)


@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_flops_scale_with_area(upsample):
    cfg = tiny(depth=3, upsample=upsample)
    small, big = forward_flops(cfg, 32, 32), forward_flops(cfg, 64, 64)
    assert small > 0
    assert big == pytest.approx(4 * small, rel=1e-9)
    if upsample == "transpose":
        assert small == pytest.approx(_expected_flops_transpose(cfg, 32, 32), rel=1e-9)


@pytest.mark.parametrize(
    "norm",
    [
        pytest.param(
            "batch"
        ),
        "group",
        "none",
    ],
)
def test_flops_with_1x1_bottleneck(norm):
    # depth 6 at 32x32: the deepest level is 1x1, a normal case for small crops.
    cfg = tiny(depth=6, norm=norm)
    assert forward_flops(cfg, 32, 32) == pytest.approx(_expected_flops_transpose(cfg, 32, 32), rel=1e-9)


@pytest.mark.parametrize("depth", [1, 7])
def test_extreme_depths(depth):
    cfg = tiny(depth=depth, base_channels=2, max_channels=8)
    model = build_unet(cfg)
    out = model(torch.randn(2, 3, 13, 9))
    assert out.shape == (2, 3, 13, 9)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert len(model.ups) == len(model.decoders) == depth - 1


def _checkpoint_config(model_cfg: ModelConfig) -> Config:
    return Config(model=model_cfg, data=DataConfig(num_classes=model_cfg.num_classes))


@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_checkpoint_round_trip_weights_only(tmp_path, upsample):
    cfg = tiny(depth=3, upsample=upsample, num_classes=4)
    model = build_unet(cfg)
    # Train-mode passes move the BatchNorm running statistics away from their defaults.
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 24, 24) * 3 + 1)
    model.eval()
    path = save_checkpoint(tmp_path / "sub" / "best.pt", model.state_dict(), _checkpoint_config(cfg),
                           (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), ("a", "b", "c", "d"), metrics={"val_miou": 0.5})
    assert path.is_file()
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())

    x = torch.randn(2, 3, 29, 35)
    with torch.no_grad():
        expected = model(x)

    raw = torch.load(path, weights_only=True)
    rebuilt = build_unet(Config.from_dict(raw["config"]).model)
    rebuilt.load_state_dict(raw["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)

    ckpt = load_checkpoint(path)
    assert ckpt.config == _checkpoint_config(cfg)
    assert ckpt.mean == (0.4, 0.5, 0.6) and ckpt.std == (0.2, 0.25, 0.3)
    assert ckpt.class_names == ("a", "b", "c", "d")
    assert ckpt.metrics == {"val_miou": 0.5}
    loaded = ckpt.build_model()
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


@pytest.mark.parametrize(("base", "blocked_like"), [(16, 16), (32, 32), (24, None), (20, None)])
def test_flops_in_channel_blocks_round_each_level_up(base, blocked_like):
    # 3 input channels and 3 classes are never rounded: an aligned UNet counts the same in blocks of 16.
    cfg = tiny(depth=3, base_channels=base, max_channels=256)
    plain, blocked = forward_flops(cfg, 32, 32), forward_flops(cfg, 32, 32, channel_block=16)
    if blocked_like is not None:
        assert blocked == plain
    else:  # base 24 (24, 48, 96) counts as (32, 48, 96); base 20 (20, 40, 80) as (32, 48, 80)
        assert plain < blocked < forward_flops(tiny(depth=3, base_channels=32, max_channels=256), 32, 32)
    if base == 24:
        chs, concat = [32, 48, 96], [48, 96]  # the skip concatenation 24 + 24 = 48 is a whole block already
        # Encoder convs and transposed convs at blocked widths: 3 -> 32 -> 32, 32 -> 48 -> 48, ...
        expected = 0.0
        in_ch = 3
        for i, c in enumerate(chs):
            expected += 2 * (32 >> i) ** 2 * 9 * (in_ch * c + c * c)
            in_ch = c
        for i in range(len(chs) - 2, -1, -1):
            px = (32 >> i) ** 2
            expected += 2 * px * chs[i + 1] * chs[i] + 2 * px * 9 * (concat[i] * chs[i] + chs[i] * chs[i])
        expected += 2 * 32 * 32 * chs[0] * cfg.num_classes
        assert blocked == pytest.approx(expected, rel=1e-9)
