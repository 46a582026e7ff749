"""The study's dataset as MLflow dataset inputs: the run page's "Datasets used" panel.

Each split is one `mlflow.data` dataset, logged with `log_inputs` on the parent run and on every
trial run, the training split with context `training` and the validation split with `validation`:

- name: the folder's name, or `embedded`, with the split (`embedded/train`, `embedded/val`);
- digest: the fingerprint's content hash over the decoded pixels and labels of both splits;
- source: the folder (a local path), or for the embedded dataset the generator and its seed;
- profile: the split's image count, image sizes, per-class pixel frequencies and the dataset spec
  (how the label files were read: classes, ignore_index, label_map, binary masks).
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import CodeDatasetSource, LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from seg.config import DataConfig

SPLITS = {"train": "training", "val": "validation"}  # fingerprint split -> MLflow dataset context
EMBEDDED = "embedded"


class ProfiledDataset(MetaDataset):
    """A metadata-only dataset (MLflow's `MetaDataset`) that also carries a profile."""

    def __init__(self, source: Any, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def dataset_base_name(data_cfg: DataConfig, fingerprint: dict[str, Any]) -> str:
    if data_cfg.root is None:
        return EMBEDDED
    return str(fingerprint["root"]).rstrip("/").rsplit("/", 1)[-1] or str(fingerprint["root"])


def dataset_source(data_cfg: DataConfig, fingerprint: dict[str, Any]) -> Any:
    """Where the data comes from: the folder, or the generator that made the embedded dataset."""
    if data_cfg.root is None:
        return CodeDatasetSource({"generator": "seg.synth", "seed": data_cfg.synth_seed,
                                  "train": data_cfg.synth_train, "val": data_cfg.synth_val})
    return LocalArtifactDatasetSource(str(fingerprint["root"]))


def split_profile(fingerprint: dict[str, Any], split: str, class_names: tuple[str, ...]) -> dict[str, Any]:
    frequencies = fingerprint["class_pixel_frequency"][split]
    profile = {"images": fingerprint["counts"][split], "num_classes": fingerprint["num_classes"],
               "image_height": fingerprint["sizes"][split]["height"],
               "image_width": fingerprint["sizes"][split]["width"],
               "class_pixel_frequency": dict(zip(class_names, frequencies))}
    if "dataset_spec" in fingerprint:  # fingerprints logged before dataset specs have none
        profile["dataset_spec"] = fingerprint["dataset_spec"]
    return profile


def split_datasets(data_cfg: DataConfig, fingerprint: dict[str, Any],
                   class_names: tuple[str, ...]) -> dict[str, ProfiledDataset]:
    """One dataset per split ("train", "val"), named `<name>/<split>`, digest = the content hash."""
    base, source = dataset_base_name(data_cfg, fingerprint), dataset_source(data_cfg, fingerprint)
    return {split: ProfiledDataset(source, f"{base}/{split}", fingerprint["content_hash"],
                                   split_profile(fingerprint, split, class_names))
            for split in SPLITS}


def dataset_inputs(datasets: dict[str, ProfiledDataset]) -> list[DatasetInput]:
    """The `log_inputs` payload: each split with its context tag (`training`, `validation`)."""
    return [DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, SPLITS[split])])
            for split, ds in datasets.items()]
