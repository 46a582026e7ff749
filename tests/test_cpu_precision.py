"""CPU precision: channels_last always (unless turned off), bf16 autocast only where the CPU has native bf16.

The native-bf16 check is forced both ways so that both paths run on any CI machine.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import seg.runtime
from seg.checkpoint import load_checkpoint
from seg.config import Config
from seg.data import load_dataset
from seg.predict import Predictor
from seg.runtime import precision_for
from seg.train import fit, save_result
from tests.test_train import _cfg, _write_blobs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return _write_blobs(tmp_path_factory.mktemp("cpu-precision") / "blobs")


def _sized(cfg: Config, base: int) -> Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, base_channels=base, max_channels=4 * base))


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("amp", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("base", [8, 12, 16, 24])
def test_cpu_precision_follows_the_config_the_widths_and_the_hardware(blobs, monkeypatch, native, amp, channels_last,
                                                                      base):
    monkeypatch.setattr(seg.runtime, "cpu_has_native_bf16", lambda: native)
    prec = precision_for(_sized(_cfg(blobs, amp=amp, channels_last=channels_last), base), CPU)
    assert prec.amp_dtype == (torch.bfloat16 if amp and native else None) and not prec.use_scaler
    # channels_last only when the narrowest level is wide enough (BatchNorm's slow path below 16 channels)
    wide = base >= seg.runtime.CPU_CHANNELS_LAST_MIN_WIDTH
    assert prec.channels_last is (channels_last and wide)
    assert prec.memory_format == (torch.channels_last if channels_last and wide else torch.contiguous_format)


def test_native_bf16_check_answers_a_bool():
    assert seg.runtime.cpu_has_native_bf16() in (True, False)


def test_fit_in_bf16_channels_last_learns_and_saves_fp32_weights(blobs, monkeypatch, tmp_path):
    monkeypatch.setattr(seg.runtime, "cpu_has_native_bf16", lambda: True)
    cfg = _sized(_cfg(blobs, epochs=4), 16)
    prec = precision_for(cfg, CPU)
    assert prec.amp_dtype == torch.bfloat16 and prec.channels_last
    data = load_dataset(blobs, 3)
    result = fit(cfg, data)
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < first.train_loss and result.best_miou > first.val_miou
    # Autocast keeps fp32 master weights: the checkpoint is the same plain fp32 state dict as ever.
    path = save_result(tmp_path / "best.pt", cfg, result, ("bg", "square", "disk"))
    ckpt = load_checkpoint(path)
    assert {t.dtype for t in ckpt.state_dict.values() if t.is_floating_point()} == {torch.float32}
    # Prediction runs in fp32 on contiguous inputs and still reads the model trained in bf16.
    labels = Predictor(ckpt, device="cpu").predict(data.val.images[0])
    assert labels.shape == data.val.masks[0].shape and int(labels.max()) <= 2


def test_cpu_precision_benchmark_tiny_writes_every_arm(tmp_path):
    from benchmarks.cpu_precision import ARMS, main

    assert main(["--tiny", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "cpu-precision.json").read_text())
    expected = [a for a in ARMS if a == "fp32" or seg.runtime.cpu_has_native_bf16()]
    assert record["arms"] == expected and set(record["skipped"]) == set(ARMS) - set(expected)
    (row,) = record["rows"]
    assert row["config"] == "baseline" and row["seed"] == 0 and row["default"] in ARMS
    assert seg.runtime.CPU_CHANNELS_LAST_MIN_WIDTH == 16, "the benchmark restores the width rule"
    for arm in expected:
        assert row[arm]["epoch_s"] > 0 and 0 <= row[arm]["final_miou"] <= 1
    assert "| baseline | fp32 | " in (tmp_path / "cpu-precision.md").read_text()
