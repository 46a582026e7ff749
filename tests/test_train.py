"""fit(): learning on a small synthetic set, the callback, early stopping, non-finite loss, the CLIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seg.checkpoint import load_checkpoint
from seg.config import Config
from seg.data import load_dataset
from seg.train import NonFiniteLossError, fit, save_result
from seg.train import main as train_main


def _write_blobs(root, n_train=12, n_val=4, size=32, seed=0):
    """Bright squares are class 1, dark disks class 2, on mid-grey: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            img = np.full((size, size, 3), 128, np.uint8)
            lab = np.zeros((size, size), np.uint8)
            cy, cx = rng.integers(6, size - 6, 2)
            sq = (abs(yy - cy) < 5) & (abs(xx - cx) < 5)
            img[sq], lab[sq] = 230, 1
            dy, dx = rng.integers(6, size - 6, 2)
            disk = (yy - dy) ** 2 + (xx - dx) ** 2 < 25
            img[disk], lab[disk] = 20, 2
            img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(lab).save(root / split / "labels" / f"{i:03d}.png")
    return root


@pytest.fixture
def blobs(tmp_path):
    return _write_blobs(tmp_path / "blobs")


def _cfg(root, **train):
    return Config.from_dict({
        "model": {"num_classes": 3, "depth": 2, "base_channels": 8, "max_channels": 16},
        "data": {"root": str(root), "num_classes": 3},
        "transforms": {"crop_mode": "none", "hflip": 0.5},
        "train": {"epochs": 3, "batch_size": 4, "lr": 1e-2, "device": "cpu", **train},
    })


def test_fit_improves_val_miou(blobs):
    cfg = _cfg(blobs)
    seen = []
    result = fit(cfg, load_dataset(blobs, 3), on_epoch_end=seen.append)
    assert [r.epoch for r in result.history] == [0, 1, 2] and seen == result.history
    first, last = result.history[0], result.history[-1]
    assert last.val_miou > first.val_miou
    assert last.train_loss < first.train_loss
    assert result.best_miou == max(r.val_miou for r in result.history)
    assert result.best_state is not None and len(result.best_confusion) == 3
    for r in result.history:
        assert r.images_per_s > 0 and r.seconds > 0 and len(r.iou) == 3 and r.lr > 0


def test_fit_is_deterministic_for_a_seed(blobs):
    data = load_dataset(blobs, 3)
    a = fit(_cfg(blobs, epochs=1), data).history[0]
    b = fit(_cfg(blobs, epochs=1), data).history[0]
    assert a.train_loss == b.train_loss and a.val_miou == b.val_miou


def test_callback_stops_training(blobs):
    result = fit(_cfg(blobs, epochs=5), load_dataset(blobs, 3), on_epoch_end=lambda r: r.epoch == 1)
    assert len(result.history) == 2 and result.stop_reason == "callback"


def test_callback_exception_aborts(blobs):
    class Stop(Exception):
        pass

    def boom(record):
        raise Stop(record.epoch)

    with pytest.raises(Stop):
        fit(_cfg(blobs), load_dataset(blobs, 3), on_epoch_end=boom)


def test_early_stopping(blobs):
    # lr=0: val mIoU never improves after epoch 0, so patience 2 stops after epoch 2.
    result = fit(_cfg(blobs, epochs=10, lr=1e-8, early_stopping=2), load_dataset(blobs, 3))
    assert result.stop_reason == "early_stopping" and len(result.history) < 10


@pytest.mark.parametrize("optimizer,scheduler", [("adamw", "cosine"), ("sgd", "onecycle"), ("rmsprop", "plateau"),
                                                 ("adam", "none")])
def test_optimizers_and_schedulers_run(blobs, optimizer, scheduler):
    result = fit(_cfg(blobs, epochs=2, optimizer=optimizer, scheduler=scheduler, grad_clip=1.0, nesterov=True),
                 load_dataset(blobs, 3))
    assert len(result.history) == 2 and all(np.isfinite(r.train_loss) for r in result.history)


def test_non_finite_loss_raises_at_once(blobs):
    cfg = _cfg(blobs, optimizer="sgd", lr=10.0, momentum=0.0).replace(model={"norm": "none"})
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        # lr=10 without norm diverges on this data stream (the per-sample loader's); the check itself
        # is in the training loop, shared by both data paths.
        fit(cfg.replace(train={"lr": 10.0, "epochs": 50}), load_dataset(blobs, 3), data_on_device=False)


def test_checkpoint_from_fit_loads_with_weights_only(blobs, tmp_path):
    cfg = _cfg(blobs, epochs=1)
    result = fit(cfg, load_dataset(blobs, 3))
    path = save_result(tmp_path / "best.pt", cfg, result, ("bg", "square", "disk"))
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == cfg.to_dict() and raw["class_names"] == ["bg", "square", "disk"]
    ckpt = load_checkpoint(path)
    assert ckpt.config == cfg and ckpt.metrics["val_miou"] == pytest.approx(result.best_miou)


def test_train_cli_writes_checkpoint_and_history(blobs, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[model]\nnum_classes = 3\ndepth = 2\nbase_channels = 4\nmax_channels = 8\n'
                      '[data]\nnum_classes = 3\n[transforms]\ncrop_mode = "none"\n[train]\nbatch_size = 4\n')
    out = tmp_path / "out"
    assert train_main(["--config", str(config), "--data", str(blobs), "--epochs", "2", "--device", "cpu",
                       "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert load_checkpoint(out / "best.pt").config.train.epochs == 2
    assert "best val mIoU" in capsys.readouterr().out


# --- the device-data path and the compiled-model cache (the CUDA defaults' logic, run on CPU) --------


def test_fit_with_data_on_device_learns_and_records_placement(blobs):
    cfg = _cfg(blobs, epochs=3).replace(transforms={"crop_mode": "random", "crop_size": 16, "rotation": 10.0})
    result = fit(cfg, load_dataset(blobs, 3), data_on_device=True)
    assert result.data_on_device and result.data_placement == "device data forced on"
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < first.train_loss and last.val_miou > first.val_miou
    assert all(r.images_per_s > 0 and 0 <= r.data_seconds <= r.train_seconds for r in result.history)


def test_fit_on_cpu_batches_the_data_in_host_memory_by_default(blobs):
    result = fit(_cfg(blobs, epochs=1), load_dataset(blobs, 3))
    assert result.data_on_device and result.data_placement.startswith("dataset stacked in host memory")
    assert not result.compiled_model_reused


def test_fit_on_cpu_keeps_the_per_sample_loader_when_asked(blobs, monkeypatch):
    monkeypatch.setenv("SEG_DEVICE_DATA", "off")
    result = fit(_cfg(blobs, epochs=1), load_dataset(blobs, 3))
    assert not result.data_on_device and "SEG_DEVICE_DATA=off" in result.data_placement


def test_device_data_decision_rules(blobs, monkeypatch):
    from seg import gpu_data
    from seg.gpu_data import device_data_decision, stacked_nbytes

    data, cpu = load_dataset(blobs, 3), torch.device("cpu")
    five = _cfg(blobs).replace(transforms={"crop_mode": "five", "resize": [32, 32], "crop_size": 16})
    assert device_data_decision(five, data, cpu, True) == (False, "crop_mode='five' runs on the CPU loader")
    assert device_data_decision(_cfg(blobs), data, cpu, False)[0] is False
    monkeypatch.setenv("SEG_DEVICE_DATA", "on")
    assert device_data_decision(_cfg(blobs), data, cpu)[0] is True
    # auto on CPU: stacked in host memory only while it takes under a quarter of what is available.
    monkeypatch.setenv("SEG_DEVICE_DATA", "auto")
    need = stacked_nbytes(data, _cfg(blobs).transforms)
    monkeypatch.setattr(gpu_data, "host_available_bytes", lambda: 4 * need)
    assert device_data_decision(_cfg(blobs), data, cpu)[0] is True
    monkeypatch.setattr(gpu_data, "host_available_bytes", lambda: 4 * need - 1)
    assert device_data_decision(_cfg(blobs), data, cpu) == (
        False, f"dataset needs {need / 2**20:.0f} MiB, over 25% of free host memory")
    monkeypatch.setattr(gpu_data, "host_available_bytes", lambda: None)
    assert device_data_decision(_cfg(blobs), data, cpu) == (False, "available host memory unknown: CPU loader")
    monkeypatch.setenv("SEG_DEVICE_DATA", "sometimes")
    with pytest.raises(ValueError, match="SEG_DEVICE_DATA='sometimes'.*auto.*on.*off"):
        device_data_decision(_cfg(blobs), data, cpu)


def test_stacked_device_data_is_reused_across_fits(blobs):
    from seg.gpu_data import cached_stack

    data, cfg = load_dataset(blobs, 3), _cfg(blobs).transforms
    first = cached_stack(data.train, cfg, torch.device("cpu"), 0, "train")
    assert cached_stack(data.train, cfg, torch.device("cpu"), 0, "train") is first
    other = load_dataset(blobs, 3, val_fraction=None)  # the process cache returns the same object ...
    assert cached_stack(other.train, cfg, torch.device("cpu"), 0, "train") is first
    bigger = cached_stack(data.train, cfg, torch.device("cpu"), 64, "train")  # ... a larger min side restacks
    assert bigger is not first and bigger.images.shape[-1] >= 64


def test_compiled_model_cache_reuses_the_module_with_fresh_seeded_weights():
    from seg.config import ModelConfig
    from seg.model import build_unet
    from seg.runtime import CompiledModelCache, Precision, seed_everything

    cache, cfg = CompiledModelCache(), ModelConfig(num_classes=3, depth=2, base_channels=4, max_channels=8)
    prec = Precision(torch.device("cpu"), None, False, False)
    seed_everything(0)
    with cache.lease(cfg, prec, True) as (model, compiled, reused):
        assert not reused and compiled is not model and compiled._orig_mod is model
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # what training does to the weights
        with cache.lease(cfg, prec, True) as (_, other, busy_reused):  # in use: a second fit gets its own
            assert not busy_reused and other is not compiled
    seed_everything(1)
    with cache.lease(cfg, prec, True) as (model2, compiled2, reused2):
        assert reused2 and model2 is model and compiled2 is compiled
        seed_everything(1)
        fresh = build_unet(cfg).state_dict()
        assert all(torch.equal(v, fresh[k]) for k, v in model2.state_dict().items())
    other = cfg.__class__(num_classes=3, depth=2, base_channels=4, max_channels=16)
    with cache.lease(other, prec, True) as (m3, _, r3):
        assert not r3 and m3 is not model  # another architecture replaces the entry
    with cache.lease(cfg, prec, False) as (m4, c4, r4):
        assert m4 is c4 and not r4  # eager models are never cached
