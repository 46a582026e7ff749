"""`search.evaluate`: the test-set figures against confusion matrices computed by hand, a real tiny study
scored end to end and read back through MlflowClient, and bad test folders refused with clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from PIL import Image

from search.evaluate import evaluate_folder
from search.evaluate import main as evaluate_main
from search.registry import CHAMPION
from search.report.evaluation_section import evaluation_section
from seg.checkpoint import load_checkpoint, save_checkpoint
from seg.config import Config, DataConfig, ModelConfig
from seg.data import DatasetSpec, Pair, Split
from seg.model import build_unet
from seg.predict import Predictor
from seg.scoring import score_folder
from seg.synth.writer import generate_dataset
from tests.studykit import StudyEnv, make_tiny_study

K = 3
NAMES = ("sky", "road", "car")


def hand_confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Rows = truth, columns = prediction; 255 in the truth is skipped. A plain double loop."""
    mat = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(truth.ravel(), pred.ravel()):
        if t != 255:
            mat[t, p] += 1
    return mat


def hand_scores(mat: np.ndarray) -> tuple[list[float | None], float, float]:
    ious = []
    for c in range(len(mat)):
        union = mat[c, :].sum() + mat[:, c].sum() - mat[c, c]
        ious.append(None if union == 0 else mat[c, c] / union)
    present = [v for v in ious if v is not None]
    return ious, sum(present) / len(present), np.trace(mat) / mat.sum()


def test_score_folder_matches_a_matrix_written_by_hand() -> None:
    # image a: 2x4 label with one ignore pixel; image b is predicted perfectly. Class 3 appears nowhere.
    truth_a = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=torch.uint8)
    pred_a = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]], dtype=torch.uint8)
    truth_b = torch.tensor([[1, 1], [0, 2]], dtype=torch.uint8)
    preds = {0: pred_a, 1: truth_b.clone()}
    pairs = (Pair("a", Path("a.png"), Path("a_label.png")), Pair("b", Path("b.png"), Path("b_label.png")))
    images = (torch.full((3, 2, 4), 0, dtype=torch.uint8), torch.full((3, 2, 2), 1, dtype=torch.uint8))
    split = Split(pairs, images, (truth_a, truth_b))
    folder = score_folder(lambda image: preds[int(image[0, 0, 0])], split, num_classes=4)
    # By hand: a gives rows [1,1,0] / [0,3,0] / [1,0,1]; b adds 1 to (0,0), 2 to (1,1), 1 to (2,2).
    expected = [[2, 1, 0, 0], [0, 5, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert [list(r) for r in folder.scores.confusion] == expected
    assert folder.scores.iou[:3] == pytest.approx([2 / 4, 5 / 6, 2 / 3])
    assert folder.scores.iou[3] is None  # absent from truth and prediction: left out of the mean
    assert folder.scores.miou == pytest.approx((2 / 4 + 5 / 6 + 2 / 3) / 3)
    assert folder.scores.pixel_accuracy == pytest.approx(9 / 11)
    assert folder.images[0].miou == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert folder.images[1].miou == pytest.approx(1.0)
    assert [s.stem for s in folder.worst(5)] == ["a", "b"]
    # Each image keeps its per-class intersection and union: their sums give the folder's IoU back.
    assert (folder.images[0].intersection, folder.images[0].union) == ((1, 3, 1, 0), (3, 4, 2, 0))
    assert (folder.images[1].intersection, folder.images[1].union) == ((1, 2, 1, 0), (1, 2, 1, 0))


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_folder(root: Path, n: int = 3, size: tuple[int, int] = (24, 40), k: int = K, seed: int = 0) -> Path:
    """ROOT/images/*.png (random RGB) and ROOT/labels/*.png (random classes, a strip of 255)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(root / "images" / f"img{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        label = rng.integers(0, k, size, dtype=np.uint8)
        label[:, :3] = 255
        write_png(root / "labels" / f"img{i}.png", label)
    return root


def make_ckpt(path: Path, names: tuple[str, ...], spec: DatasetSpec | None = None, scale: float = 1.0) -> Path:
    """A random depth-2 UNet for len(names) classes, saved with `spec` as its stored label conventions
    (and trained, as far as its config says, on data resized by `scale`)."""
    k = len(names)
    cfg = Config(model=ModelConfig(num_classes=k, depth=2, base_channels=4, max_channels=8, upsample="bilinear"),
                 data=DataConfig(num_classes=k, scale=scale))
    torch.manual_seed(0)
    model = build_unet(cfg.model)
    with torch.no_grad():  # move the BatchNorm running stats off their defaults, so predictions vary
        model.train()(torch.randn(2, 3, 32, 32))
    return save_checkpoint(path, model.state_dict(), cfg, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), names, spec=spec)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ckpt(tmp_path_factory.mktemp("ckpt") / "best.pt", NAMES)


def model_confusion(ckpt: Path, images: list[Path], truths: list[np.ndarray]) -> np.ndarray:
    """The confusion matrix by numpy from the model's own predictions on `images` against canonical `truths`."""
    predictor = Predictor(load_checkpoint(ckpt), device="cpu")
    k = predictor.ckpt.config.model.num_classes
    mat = np.zeros((k, k), dtype=np.int64)
    for path, truth in zip(images, truths):
        image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        mat += hand_confusion(truth, predictor.predict(image).numpy(), k)
    return mat


def test_binary_0_255_masks_in_a_testannot_layout_read_with_the_models_stored_spec(tmp_path: Path) -> None:
    """test/ + testannot/, 0/255 masks, no dataset.toml: the model's stored binary spec reads 255 as class 1."""
    ckpt = make_ckpt(tmp_path / "binary.pt", ("background", "cell"), spec=DatasetSpec().with_binary(remap_255=True))
    rng = np.random.default_rng(1)
    images, truths = [], []
    for i in range(2):
        images.append(tmp_path / "data" / "test" / f"s{i}.jpg")
        write_png(images[-1], rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        mask = np.where(rng.random((32, 32)) < 0.4, 255, 0).astype(np.uint8)
        write_png(tmp_path / "data" / "testannot" / f"s{i}.png", mask)
        truths.append((mask == 255).astype(np.uint8))  # canonical: 255 -> foreground (1), nothing ignored
    record = evaluate_folder(tmp_path / "data", None, checkpoint=ckpt, device="cpu")
    mat = model_confusion(ckpt, images, truths)
    assert record["confusion"] == mat.tolist() and mat.sum() == 2 * 32 * 32
    assert mat[1].sum() == sum(int(t.sum()) for t in truths) > 0  # 255 is a class here, never "ignore"
    assert record["miou"] == pytest.approx(hand_scores(mat)[1])


def test_the_folders_own_dataset_toml_wins(tmp_path: Path, tiny_ckpt: Path) -> None:
    """ignore_index = 11 and a label_map in ROOT/dataset.toml, images/ + masks/ with a suffix."""
    data = tmp_path / "data"
    (data / "dataset.toml").parent.mkdir(parents=True)
    (data / "dataset.toml").write_text('classes = ["sky", "road", "car"]\nignore_index = 11\n'
                                       'label_map = { 7 = 2 }\nlabels = "masks"\nlabel_suffix = "_mask"\n')
    rng = np.random.default_rng(2)
    raw = rng.choice(np.array([0, 1, 7, 11], dtype=np.uint8), (20, 28))
    write_png(data / "images" / "a.png", rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    write_png(data / "masks" / "a_mask.png", raw)
    truth = np.where(raw == 7, 2, np.where(raw == 11, 255, raw)).astype(np.uint8)
    record = evaluate_folder(data, None, checkpoint=tiny_ckpt, device="cpu")
    mat = model_confusion(tiny_ckpt, [data / "images" / "a.png"], [truth])
    assert record["confusion"] == mat.tolist() and mat.sum() == int((raw != 11).sum())


@pytest.mark.parametrize(("tta", "scale"), [(False, 1.0), (True, 1.0), (False, 0.5)])
def test_evaluation_equals_numpy_on_the_models_own_predictions(tmp_path: Path, tiny_ckpt: Path, tta: bool,
                                                               scale: float) -> None:
    """Also for a model trained at half resolution: it is scored at the images' original size."""
    ckpt = tiny_ckpt if scale == 1.0 else make_ckpt(tmp_path / "half.pt", NAMES, scale=scale)
    data = write_folder(tmp_path / "test", size=(24, 40))
    record = evaluate_folder(data, tmp_path / "out", checkpoint=ckpt, device="cpu", tta=tta, worst=2)
    predictor = Predictor(load_checkpoint(ckpt), device="cpu", tta=tta)
    mat = np.zeros((K, K), dtype=np.int64)
    for i in range(3):
        image = torch.from_numpy(np.array(Image.open(data / "images" / f"img{i}.png"))).permute(2, 0, 1)
        truth = np.asarray(Image.open(data / "labels" / f"img{i}.png"))
        mat += hand_confusion(truth, predictor.predict(image).numpy(), K)
    ious, miou, acc = hand_scores(mat)
    assert record["confusion"] == mat.tolist()
    assert mat.sum() == 3 * 24 * 37  # every labelled pixel at the original size, none of the ignore strip
    assert [record["iou"][n] for n in NAMES] == pytest.approx(ious)
    assert (record["miou"], record["pixel_accuracy"]) == pytest.approx((miou, acc))
    assert record["class_names"] == list(NAMES) and record["tta"] is tta
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert written["miou"] == pytest.approx(miou) and written["confusion"] == mat.tolist()
    assert (tmp_path / "out" / "confusion.png").stat().st_size > 0
    worst = sorted((tmp_path / "out" / "worst").iterdir())
    assert len(worst) == 2 and Image.open(worst[0]).size == (3 * 40 + 8, 24)
    per_image = {p["stem"]: p["miou"] for p in record["per_image"]}
    assert record["worst"] == sorted(per_image, key=per_image.get)[:2]


def run_cli(*args: str | Path) -> int:
    return evaluate_main([str(a) for a in args])


def test_values_outside_the_models_classes_are_refused(tmp_path: Path, tiny_ckpt: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = write_folder(tmp_path / "test")
    bad = np.zeros((24, 40), dtype=np.uint8)
    bad[0, 0], bad[1, 1] = 7, 4
    write_png(data / "labels" / "img1.png", bad)
    assert run_cli("--checkpoint", tiny_ckpt, "--data", data, "--out", tmp_path / "out", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "img1.png" in err and "[4, 7]" in err
    assert not (tmp_path / "out" / "evaluation.json").exists()


def test_images_without_labels_are_refused(tmp_path: Path, tiny_ckpt: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = write_folder(tmp_path / "test")
    (data / "labels" / "img2.png").unlink()
    assert run_cli("--checkpoint", tiny_ckpt, "--data", data, "--out", tmp_path / "out", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "img2.png" in err and "label" in err


def test_a_class_count_other_than_the_models_is_refused(tmp_path: Path, tiny_ckpt: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = write_folder(tmp_path / "test")
    (data / "classes.txt").write_text("sky\nroad\ncar\nbike\n")
    assert run_cli("--checkpoint", tiny_ckpt, "--data", data, "--out", tmp_path / "out", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "classes.txt" in err and "4 classes" in err and "predicts 3" in err


@pytest.fixture(scope="module")
def scored_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyEnv, Path]]:
    """A real tiny study (2 trials, 1 epoch) and a labelled test folder of the embedded dataset's kind."""
    root = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as mp:
        tiny = make_tiny_study(root, mp, trials=2, epochs=1)
        test = generate_dataset(root / "testset", seed=123, n_train=0, n_val=3, min_size=32, max_size=40) / "val"
        yield tiny, test


def test_study_best_trial_scored_and_logged_to_run_model_and_registry(
        scored_study: tuple[StudyEnv, Path], tmp_path: Path) -> None:
    tiny, test = scored_study
    assert evaluate_main(tiny.read_args("--data", str(test), "--out", str(tmp_path / "out"), "--device", "cpu")) == 0
    record = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    best = tiny.study().best_trial
    assert record["run_id"] == best.user_attrs["mlflow_run_id"] and record["images"] == 3
    client = MlflowClient(tiny.tracking_uri, registry_uri=tiny.tracking_uri)
    run = client.get_run(record["run_id"])
    assert run.data.metrics["test_miou"] == pytest.approx(record["miou"])
    assert run.data.metrics["test_pixel_acc"] == pytest.approx(record["pixel_accuracy"])
    ious = {n: v for n, v in record["iou"].items() if v is not None}
    assert {k for k in run.data.metrics if k.startswith("test_iou/")} == {f"test_iou/{n}" for n in ious}
    model = client.get_logged_model(record["model_id"])
    assert model.source_run_id == run.info.run_id
    model_metrics = {m.key: m for m in model.metrics}
    assert model_metrics["test_miou"].value == pytest.approx(record["miou"])
    assert model_metrics["test_miou"].dataset_digest == record["dataset"]["digest"]
    testing = [d for d in run.inputs.dataset_inputs
               if {(t.key, t.value) for t in d.tags} == {(MLFLOW_DATASET_CONTEXT, "testing")}]
    assert [(d.dataset.name, d.dataset.digest) for d in testing] == [("val/test", record["dataset"]["digest"])]
    champion = client.get_model_version_by_alias(tiny.name, CHAMPION)
    assert champion.run_id == run.info.run_id
    assert float(champion.tags["test_miou"]) == pytest.approx(record["miou"], abs=1e-6)
    assert run.data.tags["test_tta"] == champion.tags["test_tta"] == "false"
    assert record["registry_versions"] == [f"{tiny.name}/{champion.version}"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "test")} == {"test/evaluation.json",
                                                                                 "test/confusion.png"}
    # The study report shows the figures.
    section = evaluation_section(client, tiny.study(), best)
    assert f"{record['miou']:.4f}" in section.body and "val/test" in section.body


def test_a_tta_score_is_marked_as_one_on_the_run_and_the_registry_version(
        scored_study: tuple[StudyEnv, Path], tmp_path: Path) -> None:
    tiny, test = scored_study
    args = tiny.read_args("--data", str(test), "--out", str(tmp_path / "out"), "--device", "cpu", "--tta")
    assert evaluate_main(args) == 0
    record = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    client = MlflowClient(tiny.tracking_uri, registry_uri=tiny.tracking_uri)
    champion = client.get_model_version_by_alias(tiny.name, CHAMPION)
    assert record["tta"] is True
    assert client.get_run(record["run_id"]).data.tags["test_tta"] == champion.tags["test_tta"] == "true"


def test_registry_model_uri_scores_the_same_model(scored_study: tuple[StudyEnv, Path], tmp_path: Path) -> None:
    tiny, test = scored_study
    by_model = evaluate_folder(test, None, model=f"models:/{tiny.name}@{CHAMPION}", tracking_uri=tiny.tracking_uri,
                               device="cpu", log=False)
    by_study = evaluate_folder(test, None, study=tiny.name, storage=tiny.storage, tracking_uri=tiny.tracking_uri,
                               device="cpu", log=False)
    assert by_model["confusion"] == by_study["confusion"] and by_model["run_id"] == by_study["run_id"]
    assert by_model["model_id"] is not None
