"""A configurable UNet: depth, derived channel widths, upsampling type, norm and dropout.

`build_unet(ModelConfig(depth=6, base_channels=32, max_channels=1024))` is the seed report's
model: [32, 64, 128, 256, 512, 1024], two 3x3 conv + BN + ReLU per level with bias off, 2x2
max-pool, transposed-conv upsampling, skip concatenation and a 1x1 head (about 31.1 M params).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seg.config import ModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # The largest group count <= 8 that divides the channels, so any width works.
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> norm -> ReLU) x 2; the conv bias is off when a norm follows it."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, dropout: float) -> None:
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


def _upsampler(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    """Doubles the spatial size and maps in_ch -> out_ch channels."""
    if kind == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
    if kind == "bilinear":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_ch, out_ch, kernel_size=1),
        )
    if kind == "pixelshuffle":
        return nn.Sequential(nn.Conv2d(in_ch, out_ch * 4, kernel_size=1), nn.PixelShuffle(2))
    raise ValueError(f"upsample={kind!r}; expected one of transpose, bilinear, pixelshuffle")


class UNet(nn.Module):
    """Encoder-decoder with skip concatenation; logits have the input's height and width."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chs = cfg.level_channels()
        self.divisor = cfg.size_divisor
        self.encoders = nn.ModuleList()
        in_ch = cfg.in_channels
        for ch in chs:
            self.encoders.append(DoubleConv(in_ch, ch, cfg.norm, cfg.dropout))
            in_ch = ch
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deep, shallow in zip(reversed(chs[1:]), reversed(chs[:-1])):
            self.ups.append(_upsampler(cfg.upsample, deep, shallow))
            self.decoders.append(DoubleConv(2 * shallow, shallow, cfg.norm, cfg.dropout))
        self.head = nn.Conv2d(chs[0], cfg.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W) with any H, W; pad to a multiple of 2**(depth-1), crop at the end.
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.divisor, (-w) % self.divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i:
                x = self.pool(x)
            x = encoder(x)  # (B, C_i, H / 2**i, W / 2**i)
            skips.append(x)
        x = skips.pop()
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat([skips.pop(), up(x)], dim=1))
        logits = self.head(x)  # (B, num_classes, H_pad, W_pad)
        return logits[..., :h, :w]


def build_unet(cfg: ModelConfig) -> UNet:
    """The model for a config; raises ValueError for an impossible config."""
    model = UNet(cfg)
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    # Kaiming for ReLU nets; deterministic given the global seed.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(cfg: ModelConfig, height: int, width: int, channel_block: int = 1) -> float:
    """Multiply-adds x 2 of one forward pass at (height, width), counted from the conv layers.

    `channel_block` > 1 counts each layer's channels rounded up to a multiple of it (the image's input
    channels and the classes of the head excepted): what kernels that work in blocks of channels run."""
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = UNet(cfg)
    total = 0.0
    fixed = {id(model.encoders[0][0]): "in", id(model.head): "out"}  # the image's channels, the classes

    def blocked(channels: int) -> int:
        return -(-channels // channel_block) * channel_block

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        k = math.prod(module.kernel_size)
        c_in = module.in_channels if fixed.get(id(module)) == "in" else blocked(module.in_channels)
        c_out = module.out_channels if fixed.get(id(module)) == "out" else blocked(module.out_channels)
        pixels_in = inputs[0].numel() / module.in_channels  # (B, C, H, W): B * H * W
        pixels_out = output.numel() / module.out_channels
        if isinstance(module, nn.ConvTranspose2d):
            # Each input pixel touches k*k*out outputs.
            total += 2.0 * pixels_in * c_in * c_out * k / module.groups
        else:
            total += 2.0 * pixels_out * c_out * (c_in // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    model.eval()  # batch of one: BatchNorm in train mode would refuse a 1x1 bottleneck
    model(torch.empty(1, cfg.in_channels, height, width, device="meta"))
    for h in handles:
        h.remove()
    return total
