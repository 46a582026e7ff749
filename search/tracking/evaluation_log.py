"""A model's test-set score, logged back to MLflow where the model lives (`python -m search.evaluate`).

- `test_miou`, `test_pixel_acc` and `test_iou/<class>` go to the run that trained the model and, in
  the same `log_batch`, to its LoggedModel (`model_id=`), on the test folder as their dataset;
- the folder is one of the run's dataset inputs, context `testing` (beside `training` and
  `validation`, as `search.tracking.datasets` logs them), named `<folder>/test`, its digest a hash
  of the decoded pixels and labels, its profile the image count, sizes and class frequencies;
- every registry version of that run's model gets the tags `test_miou` and `test_dataset`;
- the run and the versions get `test_tta` ("true" or "false": whether the flipped prediction was averaged in);
- `evaluation.json` and `confusion.png` become the run's `test/` artifacts.

Evaluating again (another folder, or after a fix) logs new points: the latest value is what the run,
the model and the version show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from search.predict import ModelOrigin
from search.registry import RegistryError, registry_client, run_model
from search.tracking.datasets import ProfiledDataset
from search.tracking.epoch_metrics import metric_class_names
from search.tracking.fingerprint import class_pixel_shares, size_stats, splits_hash
from seg.data import Split
from seg.metrics import SegScores

TEST_CONTEXT = "testing"
TEST_ARTIFACT_DIR = "test"
MIOU, PIXEL_ACC, IOU_PREFIX = "test_miou", "test_pixel_acc", "test_iou/"
TTA = "test_tta"  # "true" when the figures averaged with the flipped prediction


@dataclass
class LogTargets:
    """Where the test figures go: the run, its LoggedModel and the registry versions (name, version)."""

    run_id: str | None = None
    model_id: str | None = None
    versions: list[tuple[str, str]] = field(default_factory=list)
    skipped: str | None = None  # why nothing was logged (e.g. a model file outside MLflow)


def testing_dataset(root: Path, split: Split, class_names: tuple[str, ...]) -> ProfiledDataset:
    """The test folder as an MLflow dataset: `<folder>/test`, local source, profile of the split."""
    sizes = size_stats(split)
    profile = {"images": len(split), "num_classes": len(class_names),
               "image_height": sizes["height"], "image_width": sizes["width"],
               "class_pixel_frequency": dict(zip(class_names, class_pixel_shares(split, len(class_names))))}
    name = f"{root.resolve().name or root}/test"
    return ProfiledDataset(LocalArtifactDatasetSource(str(root.resolve())), name, splits_hash(split), profile)


def score_metrics(scores: SegScores, class_names: tuple[str, ...]) -> dict[str, float]:
    """`test_miou`, `test_pixel_acc` and `test_iou/<class>` (classes absent from truth and prediction left out)."""
    metrics = {MIOU: scores.miou, PIXEL_ACC: scores.pixel_accuracy}
    for name, iou in zip(metric_class_names(class_names), scores.iou):
        if iou is not None:
            metrics[f"{IOU_PREFIX}{name}"] = iou
    return metrics


def run_versions(client: MlflowClient, origin: ModelOrigin) -> list[ModelVersion]:
    """Every registry version of the run's model (under any registered name), and the one the URI named."""
    found = {}
    if origin.run_id:
        for v in client.search_model_versions(f"run_id = '{origin.run_id}'"):
            found[(v.name, str(v.version))] = v
    if origin.version and origin.version not in found:
        found[origin.version] = client.get_model_version(*origin.version)
    return [found[key] for key in sorted(found)]


def model_of_run(client: MlflowClient, run_id: str) -> str | None:
    """The run's READY LoggedModel named `model`, or None for a run that has none (old or failed)."""
    try:
        return run_model(client, client.get_run(run_id))[1]
    except RegistryError:
        return None


def resolve_targets(tracking_uri: str, origin: ModelOrigin) -> LogTargets:
    """Where the figures will go: the model's run, its LoggedModel (named by the URI, else the run's
    model) and every registry version of it; `skipped` says why not when the model has no run."""
    if not origin.run_id:
        return LogTargets(skipped=f"{origin.description} is not an MLflow run's model; nothing is logged")
    client = registry_client(tracking_uri)
    model_id = origin.model_id or model_of_run(client, origin.run_id)
    return LogTargets(origin.run_id, model_id, [(v.name, str(v.version)) for v in run_versions(client, origin)])


def log_test_results(tracking_uri: str, targets: LogTargets, scores: SegScores, class_names: tuple[str, ...],
                     dataset: ProfiledDataset, artifacts: list[Path], tta: bool = False) -> None:
    """Log the test figures to the run and its LoggedModel (one `log_batch`), the folder as a `testing`
    input, `artifacts` under the run's `test/`, the `test_miou` tag on the registry versions, and whether
    the figures used flip test-time augmentation (`test_tta`, on the run and the versions): a score with
    TTA is not comparable with one without.
    MlflowException propagates (the caller has written its files first, so nothing is lost)."""
    if targets.run_id is None:
        return
    client = registry_client(tracking_uri)
    stamp = int(time.time() * 1000)
    batch = [Metric(k, float(v), stamp, 0, model_id=targets.model_id, dataset_name=dataset.name,
                    dataset_digest=dataset.digest) for k, v in score_metrics(scores, class_names).items()]
    client.log_batch(targets.run_id, metrics=batch, tags=[RunTag(TTA, str(tta).lower())])
    client.log_inputs(targets.run_id, datasets=[
        DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, TEST_CONTEXT)])])
    for path in artifacts:
        client.log_artifact(targets.run_id, str(path), TEST_ARTIFACT_DIR)
    for name, version in targets.versions:
        client.set_model_version_tag(name, version, MIOU, f"{scores.miou:.6f}")
        client.set_model_version_tag(name, version, "test_dataset", f"{dataset.name}@{dataset.digest}")
        client.set_model_version_tag(name, version, TTA, str(tta).lower())
