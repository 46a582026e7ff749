"""The plan's time model: seconds of one whole epoch of any configuration, from a few measured probes.

An epoch of `seg.train.fit` is the training pass (the batched data path with the sampled
augmentations, the loss, the backward pass and the optimizer step, per sample) and then the
validation pass (a forward, the loss and the confusion matrix, per validated pixel). The probes
(`search.plan.device_probe`) time exactly that on the device, for a few configurations; this module
fits them as

    train seconds per sample  = a * forward GFLOPs of one sample + b * its megapixels
    eval seconds per megapixel = c * forward GFLOPs per megapixel + d

(least squares on the relative error, non-negative: `fit_two`), so a configuration that was never
probed, such as the one a trial samples, is costed from its own FLOPs. Configurations that run
channels_last (`seg.runtime.uses_channels_last`: on a CPU, every level 16 channels or wider) get their
own four coefficients when the probes cover both layouts: in bf16 on a 2-core AMX Xeon a channels_last
UNet spent 11-15 ms of a training step per forward GFLOP of the ISBI membranes' 512 px crops, the
narrower ones 20-37 ms, so one line through both over-predicted the wide configurations (a depth-7,
base-16 trial: 8.75 s predicted, 5.81 s measured) and under-predicted base width 12
(benchmarks/results/2026-12-05-cpu/time-model-bf16/). On a CPU a channels_last configuration's FLOPs
are counted with each layer's channels rounded up to a multiple of 16 (CPU_CHANNEL_BLOCK: base 24
trained slower than base 32 there). Training counts the samples an epoch really runs: whole batches,
the remainder dropped (`seg.loaders.trained_samples`).

The probes run transposed-convolution upsampling, the most weights. The other upsampling types have the
same convolution FLOPs but not the same seconds: on Kvasir-SEG, 2-core CPU, a bilinear UNet trained
about 25 % slower than the same transposed one and the model did not know it (trials read 1.4-1.8x
their prediction; benchmarks/results/2026-12-06-cpu/time-model-upsample/). So the two ends of each
layout are probed again with each other type, and their measured seconds over what the transposed fit
predicts for them (training and validation; `upsample_factors`) scale every
configuration of that layout and type (`upsample`).

The fitted model is plain data: it is kept in the plan's fingerprint (`time_model`), and each trial
logs its prediction beside its measured epoch seconds.
Validation counts the pixels really run through the model: each batch padded to its largest image,
whole or in the tiles of `seg.sliding.validation_pixels`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from seg.config import Config, ModelConfig
from seg.loaders import trained_samples
from seg.model import forward_flops
from seg.runtime import uses_channels_last
from seg.sliding import validation_pixels

# Per epoch on top of the passes (switching to eval and back, the confusion matrix, the schedule): about
# 0.1-0.2 s measured on a busy 2-core CPU with 12 training images (negligible on real datasets).
EPOCH_FIXED_S = 0.15
REF_SIDE = 256  # the side FLOPs per pixel are counted at (deep enough for depth 8: 256 / 2**7 = 2 px)
# A channels_last layer on a CPU costs at least what it would with its channels rounded up to a
# multiple of 16. Training ms a sample, bf16 on a 2-core AMX Xeon, depth 2 at 96 px: base 16, 5.3;
# 20, 11.4; 24, 10.1; 28, 12.0; 32, 9.3 (fp32: 7.8, 16.0, 18.3, -, 21.2); the profiler put most of the
# difference in BatchNorm's backward, 2.2x as long at base 24 as at 32
# (benchmarks/results/2026-12-05-cpu/time-model-channel-blocks/).
CPU_CHANNEL_BLOCK = 16
PROBED_UPSAMPLE = "transpose"  # the fitted probes' upsampling; the other types are measured against it
OTHER_UPSAMPLES = ("bilinear", "pixelshuffle")


@dataclass(frozen=True)
class Probe:
    """One measured configuration: the forward GFLOPs and megapixels of one sample, and seconds."""

    gflops: float
    mpixels: float
    seconds: float


def fit_two(points: Sequence[Probe]) -> tuple[float, float]:
    """(a, b) >= 0 minimising sum ((seconds - a * gflops - b * mpixels) / seconds)^2: the relative error,
    which is what a prediction is judged by. Absolute least squares let the capacity rule's probes of
    the large inputs it gave up decide the line: on Kvasir-SEG (96 px crops planned, probes up to 384 px)
    it fitted b = 0 and the smallest configurations read 1.4-1.8x their prediction (2026-12-06)."""
    w = [1.0 / max(p.seconds, 1e-12) ** 2 for p in points]
    sxx = sum(wi * p.gflops ** 2 for wi, p in zip(w, points))
    spp = sum(wi * p.mpixels ** 2 for wi, p in zip(w, points))
    sxp = sum(wi * p.gflops * p.mpixels for wi, p in zip(w, points))
    sxy = sum(wi * p.gflops * p.seconds for wi, p in zip(w, points))
    spy = sum(wi * p.mpixels * p.seconds for wi, p in zip(w, points))
    det = sxx * spp - sxp ** 2
    if det > 1e-12 * max(sxx * spp, 1e-30):
        a, b = (sxy * spp - spy * sxp) / det, (spy * sxx - sxy * sxp) / det
        if a >= 0 and b >= 0:
            return a, b
    # One parameter alone when the two cannot be told apart (one probe, or probes of one shape) or one is < 0.
    only_a = (sxy / sxx, 0.0) if sxx else (0.0, 0.0)
    only_b = (0.0, spy / spp) if spp else (0.0, 0.0)

    def sse(ab: tuple[float, float]) -> float:
        return sum(wi * (p.seconds - ab[0] * p.gflops - ab[1] * p.mpixels) ** 2 for wi, p in zip(w, points))

    return min(only_a, only_b, key=sse)


@lru_cache(maxsize=512)
def model_gflops(model: ModelConfig, height: int, width: int, channel_block: int = 1) -> float:
    """Forward GFLOPs of one sample, each layer's channels counted in blocks of `channel_block`
    (`seg.model.forward_flops`; cached: each count builds the model on the meta device)."""
    return forward_flops(model, height, width, channel_block) / 1e9


def gflops_per_mpixel(model: ModelConfig, channel_block: int = 1) -> float:
    """Forward GFLOPs per megapixel (convolutions cost in proportion to the pixels)."""
    return model_gflops(model, REF_SIDE, REF_SIDE, channel_block) / (REF_SIDE * REF_SIDE / 1e6)


def channel_block(device: str, channels_last: bool) -> int:
    """The channel multiple a configuration's layers are counted in on this device (see CPU_CHANNEL_BLOCK)."""
    return CPU_CHANNEL_BLOCK if device == "cpu" and channels_last else 1


@dataclass(frozen=True)
class Coefficients:
    """The four fitted seconds of one memory layout."""

    train_s_per_gflop: float  # a: training step + data path, per forward GFLOP of a sample
    train_s_per_mpixel: float  # b: what does not grow with the width: augmentations, loss, normalisation
    eval_s_per_gflop: float  # c: validation forward, per GFLOP
    eval_s_per_mpixel: float  # d: validation loss, argmax and confusion matrix, per megapixel
    # Another upsampling type's measured seconds over the transposed convolution's, the model otherwise
    # the same: {"bilinear": [training, validation], ...}; a type not listed costs as transpose.
    upsample: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: Sequence[Probe], evals: Sequence[Probe]) -> Coefficients:
        return cls(*fit_two(train), *fit_two(evals))

    def upsample_factors(self, upsample: str) -> tuple[float, float]:
        """(training, validation) seconds of `upsample` over the probed transposed convolution's."""
        train, evals = self.upsample.get(upsample, (1.0, 1.0))
        return train, evals


@dataclass(frozen=True)
class EpochTimeModel:
    """Fitted seconds of an epoch on one device; plain data (`to_dict` / `from_dict`). The four flat
    coefficients cost configurations in the default layout (and every configuration when
    `channels_last` is None); `channels_last` those that run channels_last."""

    device: str
    train_s_per_gflop: float
    train_s_per_mpixel: float
    eval_s_per_gflop: float
    eval_s_per_mpixel: float
    epoch_fixed_s: float = EPOCH_FIXED_S
    channels_last: Coefficients | None = None
    upsample: dict[str, list[float]] = field(default_factory=dict)  # the default layout's (Coefficients.upsample)

    @classmethod
    def fit(cls, device: str, train: Sequence[Probe], evals: Sequence[Probe],
            layouts: Sequence[bool] | None = None,
            upsample: dict[bool, dict[str, list[float]]] | None = None) -> EpochTimeModel:
        """`layouts[i]`: whether probe i ran channels_last. With probes of both layouts each gets its own
        coefficients; with one layout only, one set serves every configuration. `upsample[layout]`: the
        other upsampling types' measured factors on that layout (`Coefficients.upsample`)."""
        layouts = list(layouts) if layouts is not None else [False] * len(train)
        upsample = upsample or {}
        if all(layouts) or not any(layouts):
            factors = upsample.get(bool(layouts and layouts[0]), {})
            return cls.of(device, replace(Coefficients.fit(train, evals), upsample=factors))

        def of(flag: bool) -> Coefficients:
            keep = [i for i, cl in enumerate(layouts) if cl == flag]
            fitted = Coefficients.fit([train[i] for i in keep], [evals[i] for i in keep])
            return replace(fitted, upsample=upsample.get(flag, {}))

        return cls.of(device, of(False), channels_last=of(True))

    @classmethod
    def of(cls, device: str, flat: Coefficients, channels_last: Coefficients | None = None) -> EpochTimeModel:
        """The model whose default layout has the coefficients `flat`."""
        return cls(device, flat.train_s_per_gflop, flat.train_s_per_mpixel, flat.eval_s_per_gflop,
                   flat.eval_s_per_mpixel, channels_last=channels_last, upsample=flat.upsample)

    def coefficients(self, cfg: Config) -> Coefficients:
        """The coefficients of `cfg`'s memory layout on this device."""
        return self.layout(uses_channels_last(cfg, self.device))

    def layout(self, channels_last: bool) -> Coefficients:
        """The coefficients of configurations that run channels_last (or not)."""
        if self.channels_last is not None and channels_last:
            return self.channels_last
        return Coefficients(self.train_s_per_gflop, self.train_s_per_mpixel, self.eval_s_per_gflop,
                            self.eval_s_per_mpixel, self.upsample)

    def channel_block(self, cfg: Config) -> int:
        """The channel multiple `cfg`'s FLOPs are counted in on this device."""
        return channel_block(self.device, uses_channels_last(cfg, self.device))

    def train_seconds(self, cfg: Config, hw: tuple[int, int], samples: int) -> float:
        """`samples`: those the epoch runs through the model (`seg.loaders.trained_samples`)."""
        k = self.coefficients(cfg)
        gflops = model_gflops(cfg.model, *hw, self.channel_block(cfg))
        per_sample = k.train_s_per_gflop * gflops + k.train_s_per_mpixel * hw[0] * hw[1] / 1e6
        return samples * per_sample * k.upsample_factors(cfg.model.upsample)[0]

    def eval_seconds(self, cfg: Config, pixels: float) -> float:
        """Validation of `pixels` in all (as the model sees them: padded, or in tiles)."""
        k = self.coefficients(cfg)
        gflops = gflops_per_mpixel(cfg.model, self.channel_block(cfg))
        return (k.eval_s_per_gflop * gflops + k.eval_s_per_mpixel) * pixels / 1e6 * k.upsample_factors(
            cfg.model.upsample)[1]

    def epoch_seconds(self, cfg: Config, hw: tuple[int, int], samples: int, val_pixels: float) -> float:
        return self.train_seconds(cfg, hw, samples) + self.eval_seconds(cfg, val_pixels) + self.epoch_fixed_s

    def predict(self, cfg: Config, train_sizes: Sequence[tuple[int, int]],
                val_sizes: Sequence[tuple[int, int]]) -> float:
        """Seconds of one epoch of `cfg` on a dataset of these (H, W) sizes, as decoded (after data.scale)."""
        hw, samples = training_shape(cfg, train_sizes)
        return self.epoch_seconds(cfg, hw, samples, validated_pixels(cfg, val_sizes))

    def to_dict(self) -> dict[str, Any]:
        def rounded(d: dict[str, Any]) -> dict[str, Any]:
            out = {k: (round(v, 9) if isinstance(v, float) else v) for k, v in d.items() if k != "upsample"}
            if d.get("upsample"):  # left out when none was measured (plans made before it read the same)
                out["upsample"] = {u: [round(f, 4) for f in fs] for u, fs in d["upsample"].items()}
            return out

        out = rounded({k: v for k, v in asdict(self).items() if k != "channels_last"})
        if self.channels_last is not None:  # TOML has no null: left out when there is none
            out["channels_last"] = rounded(asdict(self.channels_last))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochTimeModel:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "channels_last"}
        layout = data.get("channels_last")
        return cls(**fields, channels_last=Coefficients(**layout) if layout else None)


def upsample_factors(line: EpochTimeModel, probes: Sequence[tuple[ModelConfig, bool, Probe, Probe]]
                     ) -> dict[bool, dict[str, list[float]]]:
    """`probes`: (model, whether it ran channels_last, training probe, validation probe) of every measured
    configuration. {channels_last: {upsample: [training, validation]}}: the mean of each other upsampling type's
    measured seconds over what the transposed convolutions' fit `line` predicts for the same model.
    Over the fit, not over the one transposed twin: a ratio of two probes doubles their noise, and on
    Kvasir-SEG one slow twin read bilinear as 0.80x where its trials ran 1.2-1.3x."""
    ratios: dict[bool, dict[str, list[tuple[float, float]]]] = {}
    for m, layout, train, evals in probes:
        k = line.layout(layout)
        predicted = (k.train_s_per_gflop * train.gflops + k.train_s_per_mpixel * train.mpixels,
                     k.eval_s_per_gflop * evals.gflops + k.eval_s_per_mpixel)
        if m.upsample == PROBED_UPSAMPLE or min(predicted) <= 0:
            continue
        ratios.setdefault(layout, {}).setdefault(m.upsample, []).append(
            (train.seconds / predicted[0], evals.seconds / predicted[1]))
    return {layout: {up: [statistics.fmean(r[0] for r in rs), statistics.fmean(r[1] for r in rs)]
                     for up, rs in by_type.items()}
            for layout, by_type in ratios.items()}


def training_shape(cfg: Config, train_sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], int]:
    """((H, W) of one training sample, samples an epoch runs) under `cfg.transforms` and its batch size."""
    tf, batch = cfg.transforms, cfg.train.batch_size
    if tf.crop_mode in ("random", "five"):
        samples = len(train_sizes) * (5 if tf.crop_mode == "five" else 1)
        return (tf.crop_size, tf.crop_size), trained_samples(samples, batch)
    if tf.resize is not None:
        return tuple(tf.resize), trained_samples(len(train_sizes), batch)
    # Whole images, padded per batch: about the largest image (a cautious figure).
    return (max(h for h, _ in train_sizes), max(w for _, w in train_sizes)), trained_samples(len(train_sizes), batch)


def validated_pixels(cfg: Config, val_sizes: Sequence[tuple[int, int]]) -> float:
    """Pixels the validation pass runs through the model, batched as `fit` batches it: `eval_batch_size`
    images at a time in the loader's order, each batch padded to its largest image (`pad_collate`), then
    run whole or in the tiles `seg.sliding.validation_pixels` counts for that padded size (after the
    resize policy). Per image, without the batch's padding, Kvasir-SEG's 176 validation images of 67
    sizes read 8.7 Mpx where `fit` runs 11.1 (1.27x), and its trials took 1.2-1.3x the predicted epoch."""
    batch, total = max(1, cfg.train.eval_batch_size), 0
    for i in range(0, len(val_sizes), batch):
        chunk = val_sizes[i: i + batch]
        h, w = max(h for h, _ in chunk), max(w for _, w in chunk)  # the padded batch
        total += len(chunk) * validation_pixels(h, w, cfg)
    return float(total)

