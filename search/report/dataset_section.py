"""The dataset fingerprint section, read from the parent run's `dataset_fingerprint.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.report.html import Section, key_values, note, table

FINGERPRINT_ARTIFACT = "dataset_fingerprint.json"


def load_fingerprint(client: MlflowClient, parent_run_id: str, tmp: Path) -> dict[str, Any]:
    local = client.download_artifacts(parent_run_id, FINGERPRINT_ARTIFACT, str(tmp))
    return json.loads(Path(local).read_text())


def size_text(stats: dict[str, Any]) -> str:
    return f"{stats['min']}-{stats['max']} (median {stats['median']:g})"


def split_sizes(fp: dict[str, Any], split: str) -> str:
    sizes = fp["sizes"][split]
    return f"{size_text(sizes['height'])} / {size_text(sizes['width'])}"


def fingerprint_section(client: MlflowClient, parent_run_id: str | None, class_names: list[str] | None,
                        tmp: Path) -> Section:
    title = "Dataset fingerprint"
    if not parent_run_id:
        return Section("fingerprint", title, note("The study has no parent MLflow run (mlflow_parent_run_id)."))
    try:
        fp = load_fingerprint(client, parent_run_id, tmp)
        summary = [("root", fp["root"]), ("content hash", fp["content_hash"]), ("classes", fp["num_classes"]),
                   ("images (train / val)", f"{fp['counts']['train']} / {fp['counts']['val']}"),
                   ("train height / width", split_sizes(fp, "train")),
                   ("val height / width", split_sizes(fp, "val")),
                   ("mean (RGB)", ", ".join(f"{v:.4f}" for v in fp["mean"])),
                   ("std (RGB)", ", ".join(f"{v:.4f}" for v in fp["std"]))]
        freq = fp["class_pixel_frequency"]
    except (MlflowException, OSError, KeyError, ValueError) as err:
        return Section("fingerprint", title,
                       note(f"no usable {FINGERPRINT_ARTIFACT} on parent run {parent_run_id}: {err}"))
    k = fp["num_classes"]
    names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
    rows = [[i, name, f"{tr:.4f}", f"{va:.4f}"]
            for i, (name, tr, va) in enumerate(zip(names, freq["train"], freq["val"]))]
    body = (key_values(summary) + "<p>Share of labelled pixels per class:</p>"
            + table(["id", "class", "train", "val"], rows, numeric={0, 2, 3}))
    return Section("fingerprint", title, body)
