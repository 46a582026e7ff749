"""What `search.evaluate` shows and writes: rich tables of the scores, `evaluation.json`,
`confusion.png` (per-class IoU bars and the row-normalised confusion matrix) and, under `worst/`, the
images with the lowest mIoU as [image | ground truth | prediction] strips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from search.tracking.artifacts import iou_confusion_figure
from seg.data import Split
from seg.predict import Predictor, overlay_image
from seg.scoring import FolderScores, ImageScore

EVALUATION_FILE = "evaluation.json"
CONFUSION_FILE = "confusion.png"
WORST_DIR = "worst"


def evaluation_record(folder: FolderScores, class_names: tuple[str, ...], worst: list[ImageScore],
                      **about: Any) -> dict[str, Any]:
    """The plain-data result (evaluation.json): the folder's figures, per image, and `about` (model, data...)."""
    s = folder.scores
    confusion = np.asarray(s.confusion, dtype=np.int64)
    return {
        "miou": s.miou,
        "pixel_accuracy": s.pixel_accuracy,
        "iou": dict(zip(class_names, s.iou)),
        "class_names": list(class_names),
        "confusion": [list(row) for row in s.confusion],
        "truth_pixels": [int(v) for v in confusion.sum(1)],
        "predicted_pixels": [int(v) for v in confusion.sum(0)],
        "images": len(folder.images),
        "labelled_pixels": int(confusion.sum()),
        "per_image": [{"stem": i.stem, "miou": i.miou, "pixel_accuracy": i.pixel_accuracy,
                       "labelled_pixels": i.labelled_pixels, "intersection": list(i.intersection),
                       "union": list(i.union)} for i in folder.images],
        "worst": [i.stem for i in worst],
        **about,
    }


def write_json(out: Path, record: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / EVALUATION_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def write_confusion(out: Path, record: dict[str, Any]) -> Path:
    names, ious = record["class_names"], [record["iou"][n] for n in record["class_names"]]
    fig = iou_confusion_figure(names, ious, np.asarray(record["confusion"]),
                               f"IoU per class (test mIoU {record['miou']:.3f}, {record['images']} images)")
    path = out / CONFUSION_FILE
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_worst(out: Path, predictor: Predictor, split: Split, worst: list[ImageScore]) -> list[Path]:
    """WORST/NN-<stem>.png per image, worst first: the image, the truth and the prediction over it."""
    folder = out / WORST_DIR
    folder.mkdir(parents=True, exist_ok=True)
    k = predictor.ckpt.config.model.num_classes
    paths = []
    for rank, item in enumerate(worst, start=1):
        image, truth = split.images[item.index], split.masks[item.index]  # (3, H, W), (H, W)
        panels = [Image.fromarray(image.permute(1, 2, 0).numpy()), overlay_image(image, truth, k),
                  overlay_image(image, predictor.predict(image), k)]
        w, h = panels[0].size
        strip = Image.new("RGB", (3 * w + 8, h), "white")
        for i, panel in enumerate(panels):
            strip.paste(panel.convert("RGB"), (i * (w + 4), 0))
        path = folder / f"{rank:02d}-{item.stem}.png"
        strip.save(path)
        paths.append(path)
    return paths


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_scores(console: Console, record: dict[str, Any]) -> None:
    """The summary, per-class IoU and the confusion matrix (rows = truth, columns = prediction)."""
    names = record["class_names"]
    summary = Table(title=f"test set {record['data']}", show_header=False)
    summary.add_row("model", record["model"])
    summary.add_row("images", f"{record['images']} ({record['labelled_pixels']:,} labelled pixels)")
    summary.add_row("mIoU", _fmt(record["miou"]))
    summary.add_row("pixel accuracy", _fmt(record["pixel_accuracy"]))
    if record.get("tta"):
        summary.add_row("test-time augmentation", "horizontal flip")
    console.print(summary)
    per_class = Table(title="IoU per class (a dash: absent from truth and prediction, left out of mIoU)")
    for column in ("class", "IoU", "truth pixels", "predicted pixels"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(names):
        per_class.add_row(f"{i} {name}", _fmt(record["iou"][name]), f"{record['truth_pixels'][i]:,}",
                          f"{record['predicted_pixels'][i]:,}")
    console.print(per_class)
    # Columns by class index, so the matrix fits a terminal whatever the names' lengths.
    confusion = Table(title="confusion matrix: pixels, rows = truth, columns = predicted class index")
    confusion.add_column("truth")
    for i in range(len(names)):
        confusion.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(names, record["confusion"])):
        confusion.add_row(f"{i} {name}", *(f"{v:,}" for v in row))
    console.print(confusion)
    if record["worst"]:
        console.print("lowest mIoU: " + ", ".join(
            f"{p['stem']} {p['miou']:.3f}" for stem in record["worst"]
            for p in record["per_image"] if p["stem"] == stem))
