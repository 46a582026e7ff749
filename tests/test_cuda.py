"""CUDA-only checks, marked `cuda`: skipped where there is no GPU, run on one by `scripts/gpu-check`.

Each test runs a path that only exists on CUDA: bf16 autocast with channels_last and cuDNN's
autotuner, the dataset stacked on the GPU and augmented there, the compiled-model cache across
trials, the memory estimate against a probe's measured peak, and predicting (the CLI and the
pyfunc model) on the GPU. An injected OOM on CUDA lives in test_faults.py, with the other faults.
Where a figure is measured rather than asserted (the estimate's ratio to the peak), it is written
to `$GPU_CHECK_OUT/memory_estimate.json` when that variable is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from search.predict import main as predict_main
from search.workers import visible_gpus, worker_env
from seg.config import Config
from seg.data import load_dataset
from seg.gpu_data import DeviceLoader, DeviceSplit
from seg.memory import GiB, estimate_training_memory, probe_training_memory
from seg.runtime import MODEL_CACHE, precision_for
from seg.train import fit
from tests.studykit import make_tiny_study
from tests.test_train import _write_blobs
from tests.test_transforms import assert_exact_encoding, each_sample, make_batch

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_blobs(tmp_path_factory.mktemp("cuda") / "blobs", n_train=32, n_val=8)


def cuda_cfg(root: Path, **train: object) -> Config:
    return Config.from_dict({
        "model": {"num_classes": 3, "depth": 3, "base_channels": 8, "max_channels": 32},
        "data": {"root": str(root), "num_classes": 3},
        "transforms": {"crop_mode": "random", "crop_size": 24, "hflip": 0.5, "rotation": 10.0},
        "train": {"epochs": 4, "batch_size": 8, "lr": 1e-2, "device": "cuda", "amp": True, "channels_last": True,
                  **train},
    })


def test_fit_on_cuda_with_bf16_and_channels_last_learns(blobs: Path) -> None:
    cfg = cuda_cfg(blobs)
    prec = precision_for(cfg, torch.device("cuda"))
    assert prec.amp_dtype == torch.bfloat16 and prec.channels_last and not prec.use_scaler
    assert torch.backends.cudnn.benchmark, "precision_for turns cuDNN's autotuner on for CUDA"
    result = fit(cfg, load_dataset(blobs, 3))
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < first.train_loss, [r.train_loss for r in result.history]
    assert all(np.isfinite(r.val_loss) for r in result.history)


def test_the_gpu_data_path_is_taken_and_keeps_crops_and_masks_aligned(blobs: Path) -> None:
    result = fit(cuda_cfg(blobs, epochs=1), load_dataset(blobs, 3))
    assert result.data_on_device and "GPU memory" in result.data_placement
    cpu = make_batch(6)
    split = DeviceSplit(cpu.images.cuda(), cpu.masks.cuda(), cpu.sizes.cuda(), cpu.host_sizes)
    cfg = cuda_cfg(blobs).transforms
    loader = DeviceLoader(split, 3, seed=0, augment=cfg, shuffle=True, drop_last=True)
    for images, masks in loader:
        assert images.is_cuda and masks.is_cuda and images.shape[-2:] == (cfg.crop_size, cfg.crop_size)
        # Nearest sampling on one grid for image and mask: the image still encodes its mask exactly.
        for image, mask in each_sample(images.cpu(), masks.cpu()):
            assert_exact_encoding(image, mask)


def test_the_compiled_model_is_reused_by_the_next_trial_without_recompiling(blobs: Path) -> None:
    from torch._dynamo.utils import counters

    MODEL_CACHE.clear()
    cfg = cuda_cfg(blobs, epochs=1, compile=True)
    data = load_dataset(blobs, 3)
    first = fit(cfg, data)
    graphs = counters["stats"]["unique_graphs"]
    hits = MODEL_CACHE.hits
    second = fit(cfg.replace(train={"seed": 1}), data)  # the next trial: same architecture, its own seed
    assert not first.compiled_model_reused and second.compiled_model_reused
    assert MODEL_CACHE.hits == hits + 1
    assert counters["stats"]["unique_graphs"] == graphs, "the second trial compiled again"


@pytest.mark.parametrize("model", [
    {"depth": 3, "base_channels": 8, "max_channels": 32},
    {"depth": 4, "base_channels": 16, "max_channels": 128},
    {"depth": 5, "base_channels": 32, "max_channels": 256},
])
def test_memory_estimate_against_the_probe_s_measured_peak(blobs: Path, model: dict) -> None:
    cfg = cuda_cfg(blobs).replace(model=model, train={"batch_size": 16})
    h = w = 128
    estimate = estimate_training_memory(cfg, h, w, amp=True).total
    peak = probe_training_memory(cfg, h, w, torch.device("cuda"))
    assert estimate > 0 and peak > 0
    ratio = estimate / peak
    record(f"depth {model['depth']}, {model['base_channels']}->{model['max_channels']}, batch 16, {h}x{w}",
           {"estimate_gib": round(estimate / GiB, 4), "peak_gib": round(peak / GiB, 4), "ratio": round(ratio, 3)})
    # The estimate gates trials before they start: wildly off either way would reject configs that
    # fit or let through ones that do not. The exact ratio is reported, not asserted.
    assert 0.25 < ratio < 8, f"estimate {estimate / GiB:.3f} GiB against a measured peak of {peak / GiB:.3f} GiB"


def record(key: str, figures: dict) -> None:
    folder = os.environ.get("GPU_CHECK_OUT")
    if not folder:
        return
    path = Path(folder) / "memory_estimate.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[key] = figures
    path.write_text(json.dumps(table, indent=2))


def test_workers_share_the_gpus_round_robin() -> None:
    gpus = visible_gpus("auto")
    assert gpus and len(gpus) == torch.cuda.device_count()
    assigned = [worker_env(i, 3, gpus)["CUDA_VISIBLE_DEVICES"] for i in range(3)]
    assert assigned == [gpus[i % len(gpus)] for i in range(3)]
    assert visible_gpus("cpu") == []


def test_predict_and_the_pyfunc_model_run_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_tiny_study(tmp_path, monkeypatch, trials=1, epochs=1)
    images = tmp_path / "inputs"
    images.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "odd.png")
    out = tmp_path / "pred"
    assert predict_main(env.read_args("--device", "cuda", "--out", str(out), str(images))) == 0
    assert Image.open(out / "odd.png").size == (53, 37)
    model_uri = f"runs:/{env.study().best_trial.user_attrs['mlflow_run_id']}/model"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    assert next(model.unwrap_python_model().predictor.model.parameters()).is_cuda  # "auto" chose the GPU
    labels = model.predict(rgb[None])
    assert labels.shape == (1, 37, 53) and labels.dtype == np.uint8
