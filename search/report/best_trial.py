"""The best trial's sections: per-class IoU and confusion matrix (from its run's `metrics/confusion.json`),
and its predictions on validation images next to the ground truth (from its checkpoint)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from search.predict import ArtifactError, fetch_checkpoint
from search.report.html import Section, esc, image, image_grid, note, pil_image, table
from search.tracking.artifacts import iou_confusion_figure
from search.tracking.client import RUN_ID_ATTR
from seg.config import Config
from seg.data import SegmentationData
from seg.loaders import resolve_dataset
from seg.predict import Predictor, label_image, overlay_image

CONFUSION_ARTIFACT = "metrics/confusion.json"
N_OVERLAYS = 4


def class_ious(confusion: np.ndarray) -> list[float | None]:
    """IoU per class from a (truth, prediction) confusion matrix; None where the class is absent from both."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]


def load_confusion(client: MlflowClient, run_id: str, tmp: Path) -> tuple[list[str], np.ndarray]:
    local = client.download_artifacts(run_id, CONFUSION_ARTIFACT, str(tmp))
    raw = json.loads(Path(local).read_text())
    return list(raw["class_names"]), np.asarray(raw["confusion"], dtype=np.int64)


def per_class_section(client: MlflowClient, trial: optuna.trial.FrozenTrial | None, tmp: Path) -> Section:
    title = "Best trial: per-class IoU and confusion matrix"
    if trial is None:
        return Section("per-class", title, note("No complete trial yet."))
    run_id = trial.user_attrs.get(RUN_ID_ATTR, "")
    try:
        names, confusion = load_confusion(client, run_id, tmp)
    except (MlflowException, OSError, KeyError, ValueError) as err:
        return Section("per-class", title, note(f"trial {trial.number}: no usable {CONFUSION_ARTIFACT} in MLflow run "
                                                f"{run_id}: {err}"))
    ious = class_ious(confusion)
    truth_pixels = confusion.sum(1)
    rows = [[name, "-" if iou is None else f"{iou:.4f}", int(px)] for name, iou, px in zip(names, ious, truth_pixels)]
    present = [v for v in ious if v is not None]
    intro = (f"<p>Trial {trial.number} (MLflow run <code>{esc(run_id)}</code>), val mIoU {trial.value:.4f}; "
             f"mean of these {len(present)} classes: {np.mean(present):.4f}. A dash marks a class absent from both "
             "truth and prediction (left out of mIoU).</p>")
    body = intro + table(["class", "IoU", "truth pixels"], rows, numeric={1, 2}) + image(
        iou_confusion_figure(names, ious, confusion, "IoU per class (validation, best epoch)"),
        "per-class IoU and confusion matrix")
    return Section("per-class", title, body)


def trial_dataset_config(trial: optuna.trial.FrozenTrial, data_root: str | None) -> Config:
    cfg = Config.from_dict(trial.user_attrs["config"], source=f"trial {trial.number} user attr 'config'")
    return replace(cfg, data=replace(cfg.data, root=data_root)) if data_root else cfg


def overlay_section(trial: optuna.trial.FrozenTrial | None, tracking_uri: str, data_root: str | None,
                    tmp: Path, device: str = "cpu") -> Section:
    title = "Best trial: predictions on validation images"
    if trial is None:
        return Section("overlays", title, note("No complete trial yet."))
    try:
        ckpt = fetch_checkpoint(trial, tracking_uri, tmp)
        cfg = trial_dataset_config(trial, data_root)
        data = resolve_dataset(cfg.data)
    except (ArtifactError, KeyError, ValueError, OSError) as err:  # DatasetError is a ValueError
        return Section("overlays", title, note(f"trial {trial.number}: cannot predict ({err}). For a folder dataset "
                                               "that moved, pass --data /new/path."))
    rows = prediction_rows(Predictor(ckpt, device=device), data, N_OVERLAYS)
    intro = (f"<p>The first {len(rows)} validation images of <code>{esc(data.root)}</code> at their own size: the "
             f"image, the ground truth, trial {trial.number}'s prediction, and the prediction blended over the "
             "image (same palette as <code>search.predict</code>).</p>")
    return Section("overlays", title, intro + image_grid(["image", "ground truth", "prediction", "overlay"], rows))


def prediction_rows(predictor: Predictor, data: SegmentationData, n: int) -> list[list[str]]:
    """Per validation image: image, truth, prediction, overlay, as embedded <img> cells."""
    k = predictor.ckpt.config.model.num_classes
    rows = []
    for i in range(min(n, len(data.val))):
        img, truth, stem = data.val.images[i], data.val.masks[i], data.val.pairs[i].stem
        pred = predictor.predict(img)
        rows.append([pil_image(Image.fromarray(img.permute(1, 2, 0).numpy()), f"{stem} image", "JPEG"),
                     pil_image(label_image(truth, k), f"{stem} ground truth"),
                     pil_image(label_image(pred, k), f"{stem} prediction"),
                     pil_image(overlay_image(img, pred, k), f"{stem} overlay", "JPEG")])
    return rows
