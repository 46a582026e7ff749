"""Predictor from a saved checkpoint of a tiny random UNet, file output, and checkpoint error handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seg.config import Config, DataConfig, ModelConfig, TransformConfig
from seg.data import decode_image, load_labelled_folder
from seg.model import build_unet
from seg.predict import Predictor, iter_inputs, main, predict_files
from seg.transforms import Normalize

K = 4
MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)


def _config(resize=None, depth=3) -> Config:
    return Config(
        model=ModelConfig(num_classes=K, depth=depth, base_channels=4, max_channels=16, upsample="bilinear"),
        data=DataConfig(num_classes=K),
        transforms=TransformConfig(resize=resize),
    )


def _save(path: Path, cfg: Config) -> Path:
    torch.manual_seed(0)
    model = build_unet(cfg.model)
    with torch.no_grad():  # move the BatchNorm running stats away from their defaults
        model(torch.randn(2, 3, 24, 24))
    return save_checkpoint(path, model.state_dict(), cfg, MEAN, STD, tuple(f"c{i}" for i in range(K)))


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "best.pt", _config())


@pytest.fixture(scope="module")
def resize_ckpt_path(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "resize.pt", _config(resize=(32, 48)))


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


class InputSizes:
    """Records the spatial size of every model forward (a real forward hook, not a mock)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.handle = model.register_forward_hook(lambda m, args, out: self.sizes.append(tuple(args[0].shape[-2:])))


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (9, 100), (1, 1)])
def test_predict_odd_sizes_whole_image(ckpt_path, size):
    pred = Predictor.from_path(ckpt_path, device="cpu")
    image = _image(*size)
    label = pred.predict(image)
    assert label.shape == size and label.dtype == torch.uint8
    assert int(label.max()) < K
    # Whole-image path = the checkpoint's model on the normalised image.
    model = load_checkpoint(ckpt_path).build_model()
    with torch.no_grad():
        expected = model(Normalize(MEAN, STD)(image[None]))[0]
    torch.testing.assert_close(pred.logits(image), expected)
    assert torch.equal(label, expected.argmax(0).to(torch.uint8))


@pytest.mark.parametrize("max_side, size", [(32, (50, 70)), (30, (50, 70)), (32, (29, 100)), (16, (37, 53))])
def test_sliding_window_covers_every_pixel(ckpt_path, max_side, size):
    pred = Predictor.from_path(ckpt_path, device="cpu", max_side=max_side)
    seen = InputSizes(pred.model)
    image = _image(*size, seed=1)
    logits = pred.logits(image)
    assert logits.shape == (K, *size)
    assert torch.isfinite(logits).all()  # a pixel no tile covered would be 0/0 = NaN
    assert len(seen.sizes) > 1  # the sliding window was used
    tile = (max_side // 4) * 4  # depth 3: tiles are a multiple of 2**2
    assert all(h <= tile and w <= tile for h, w in seen.sizes)
    label = pred.predict(image)
    assert label.shape == size and label.dtype == torch.uint8 and int(label.max()) < K


@pytest.fixture(scope="module")
def constant_ckpt_path(tmp_path_factory) -> Path:
    """A model whose logits are its head bias at every pixel: all other weights are zero."""
    cfg = _config()
    model = build_unet(cfg.model)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    state = {k: torch.ones_like(v) if k.endswith("running_var") else v for k, v in state.items()}
    state["head.bias"] = torch.tensor([0.5, -1.0, 2.0, 1.0])
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "const.pt", state, cfg, MEAN, STD, ())


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("max_side, size", [(32, (50, 70)), (16, (37, 53)), (1024, (37, 53))])
def test_sliding_window_averages_overlaps(constant_ckpt_path, tta, max_side, size):
    # Every tile predicts the head bias everywhere, so averaged overlapping tiles must too; a sum
    # instead of a mean, or an uncovered pixel, would show up as 2x, 4x or NaN.
    pred = Predictor.from_path(constant_ckpt_path, device="cpu", max_side=max_side, tta=tta)
    logits = pred.logits(_image(*size, seed=3))
    expected = torch.tensor([0.5, -1.0, 2.0, 1.0]).view(K, 1, 1).expand(K, *size)
    torch.testing.assert_close(logits, expected)
    assert pred.predict(_image(*size)).eq(2).all()


def test_default_class_names(constant_ckpt_path):
    assert load_checkpoint(constant_ckpt_path).class_names == ("0", "1", "2", "3")


def test_resize_config_predicts_at_input_size(resize_ckpt_path):
    pred = Predictor.from_path(resize_ckpt_path, device="cpu")
    seen = InputSizes(pred.model)
    for size in [(37, 53), (80, 20)]:
        label = pred.predict(_image(*size))
        assert label.shape == size and label.dtype == torch.uint8
    assert seen.sizes == [(32, 48), (32, 48)]  # the model runs at the config's resize


def test_tta_averages_with_flipped(ckpt_path):
    plain = Predictor.from_path(ckpt_path, device="cpu")
    tta = Predictor.from_path(ckpt_path, device="cpu", tta=True)
    image = _image(37, 53, seed=2)
    expected = (plain.logits(image) + plain.logits(image.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(tta.logits(image), expected)
    label = tta.predict(image)
    assert label.shape == (37, 53) and label.dtype == torch.uint8


def test_tta_with_sliding_window_and_resize(resize_ckpt_path):
    pred = Predictor.from_path(resize_ckpt_path, device="cpu", tta=True, max_side=16)
    logits = pred.logits(_image(41, 27))
    assert logits.shape == (K, 41, 27) and torch.isfinite(logits).all()


@pytest.mark.parametrize("scale, size", [(0.5, (41, 60)), (0.25, (37, 53)), (0.3, (3, 90))])
def test_data_scale_predicts_at_the_original_resolution(tmp_path, scale, size):
    """The model runs on the image as training decoded it (data.scale); logits and labels come back at the
    original size: the model's logits upsampled."""
    path = _save(tmp_path / "scaled.pt", _config().replace(data={"scale": scale}))
    pred = Predictor.from_path(path, device="cpu")
    seen = InputSizes(pred.model)
    # A photo, and the same photo decoded from a labelled folder at this scale: what training saw.
    for sub in ("images", "labels"):
        (tmp_path / "folder" / sub).mkdir(parents=True)
    photo = tmp_path / "folder" / "images" / "x.png"
    Image.fromarray(_image(*size, seed=4).permute(1, 2, 0).numpy()).save(photo)
    Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / "folder" / "labels" / "x.png")
    decoded = load_labelled_folder(tmp_path / "folder", K, scale=scale).images[0]  # uint8 (3, h, w)
    image = decode_image(photo)  # uint8 (3, H, W), as seg.predict reads it
    logits = pred.logits(image)
    assert logits.shape == (K, *size) and pred.predict(image).shape == size
    assert seen.sizes[0] == tuple(decoded.shape[-2:]) != size
    model = load_checkpoint(path).build_model()
    with torch.no_grad():
        small = model(Normalize(MEAN, STD)(decoded[None]))  # (1, K, h, w)
    expected = torch.nn.functional.interpolate(small, size=size, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(logits, expected)


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "scan.png")
    Image.fromarray(rng.integers(0, 256, (20, 31, 3), dtype=np.uint8)).save(folder / "upper.JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


EXPECTED_SIZES = {"photo": (53, 37), "scan": (70, 50), "upper": (31, 20)}  # PIL sizes are (W, H)


def _check_outputs(pred: Predictor, files: list[Path], written: list[Path], out: Path) -> None:
    assert sorted(p.name for p in written) == sorted(f"{f.stem}.png" for f in files)
    for src in files:
        label_path, overlay_path = out / f"{src.stem}.png", out / f"{src.stem}_overlay.png"
        with Image.open(label_path) as label:
            assert label.format == "PNG" and label.mode == "P"
            assert label.size == EXPECTED_SIZES[src.stem]
            saved = torch.from_numpy(np.array(label))
        assert torch.equal(saved, pred.predict(decode_image(src)))
        with Image.open(overlay_path) as overlay:
            assert overlay.size == EXPECTED_SIZES[src.stem] and overlay.mode == "RGB"


def test_predict_files_from_files(ckpt_path, image_folder, tmp_path):
    pred = Predictor.from_path(ckpt_path, device="cpu", max_side=32)
    files = iter_inputs([image_folder / "photo.jpg", str(image_folder / "scan.png")])
    assert files == [image_folder / "photo.jpg", image_folder / "scan.png"]
    out = tmp_path / "out" / "nested"
    written = predict_files(pred, files, out)
    _check_outputs(pred, files, written, out)
    assert len(list(out.iterdir())) == 6  # 2 label maps, 2 overlays, the legend's PNG and JSON


def test_predict_files_from_folder(ckpt_path, image_folder, tmp_path):
    pred = Predictor.from_path(ckpt_path, device="cpu")
    files = iter_inputs([image_folder])
    assert [f.name for f in files] == ["photo.jpg", "scan.png", "upper.JPEG"]  # sorted, .txt skipped
    out = tmp_path / "out"
    written = predict_files(pred, files, out)
    _check_outputs(pred, files, written, out)


def test_predict_cli(ckpt_path, image_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(image_folder), "--checkpoint", str(ckpt_path), "--out", str(out), "--device", "cpu",
                 "--tta", "--max-side", "32"]) == 0
    assert "wrote 3" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}.png" for s in EXPECTED_SIZES] + [f"{s}_overlay.png" for s in EXPECTED_SIZES]
        + ["classes-legend.png", "classes-legend.json"])


def test_legend_names_each_class_with_its_palette_colour(ckpt_path, image_folder, tmp_path):
    pred = Predictor.from_path(ckpt_path, device="cpu")
    out = tmp_path / "legend"
    predict_files(pred, [image_folder / "photo.jpg"], out)
    legend = json.loads((out / "classes-legend.json").read_text())
    assert [c["name"] for c in legend["classes"]] == [f"c{i}" for i in range(K)]
    with Image.open(out / "photo.png") as label:  # the label map's palette is the legend's colours
        colours = np.asarray(label.getpalette()).reshape(-1, 3)
    assert [c["rgb"] for c in legend["classes"]] == colours[:K].tolist()
    with Image.open(out / "classes-legend.png") as png:
        assert png.height >= 18 * K and len(png.getcolors(10_000)) > 2  # swatches and text, not blank


def test_an_input_named_like_the_legend_is_refused(ckpt_path, tmp_path):
    src = tmp_path / "in" / "classes-legend.png"
    src.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    with pytest.raises(ValueError, match="classes-legend"):
        predict_files(Predictor.from_path(ckpt_path, device="cpu"), [src], tmp_path / "out")


def test_iter_inputs_missing_path(image_folder):
    missing = image_folder / "nope.jpg"
    with pytest.raises(FileNotFoundError) as info:
        iter_inputs([image_folder / "photo.jpg", missing])
    assert str(missing) in str(info.value)


def test_iter_inputs_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(FileNotFoundError):
        iter_inputs([tmp_path / "empty"])


def test_load_checkpoint_contents(ckpt_path):
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.config == _config()
    assert ckpt.mean == MEAN and ckpt.std == STD
    assert ckpt.class_names == ("c0", "c1", "c2", "c3")
    assert not ckpt.build_model().training


def test_load_checkpoint_missing_file(tmp_path):
    path = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint\x00\x01\x02" * 10], ids=["empty", "garbage"])
def test_load_checkpoint_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_checkpoint_truncated_file(ckpt_path, tmp_path):
    path = tmp_path / "torn.pt"
    data = ckpt_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [{"state_dict": {}}, [1, 2, 3], {"config": Config().to_dict(), "state_dict": {}, "mean": [0.0] * 3}],
    ids=["no-config", "not-a-dict", "no-std"],
)
def test_load_checkpoint_foreign_payload(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_checkpoint_pickled_objects_refused(ckpt_path, tmp_path):
    raw = torch.load(ckpt_path, weights_only=True)
    raw["config"] = _config()  # a pickled dataclass instead of plain data
    path = tmp_path / "pickled.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["model"].update(depth=2),
        lambda c: c["model"].update(depth=4),
        lambda c: c["model"].update(base_channels=8),
        lambda c: c["model"].update(upsample="transpose"),
        lambda c: (c["model"].update(num_classes=5), c["data"].update(num_classes=5)),
    ],
    ids=["depth-2", "depth-4", "width", "upsample", "classes"],
)
def test_load_checkpoint_config_does_not_match_weights(ckpt_path, tmp_path, edit):
    raw = torch.load(ckpt_path, weights_only=True)
    edit(raw["config"])
    path = tmp_path / "mismatch.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "do not match" in str(info.value)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["model"].update(upsample="nearest"),
        lambda c: c["train"].update(learning_rate=0.1),
        pytest.param(
            lambda c: c["model"].update(num_classes=5),  # disagrees with data.num_classes
        ),
    ],
    ids=["bad-choice", "unknown-key", "num-classes"],
)
def test_load_checkpoint_invalid_config(ckpt_path, tmp_path, edit):
    raw = torch.load(ckpt_path, weights_only=True)
    edit(raw["config"])
    path = tmp_path / "invalid.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
