"""Score a study's best trial (or a chosen trial, or any MLflow model) on a labelled test folder.

    python -m search.evaluate --study default --data /path/to/test --out evaluation/
    python -m search.evaluate --study default --trial 12 --data /path/to/test --out evaluation/ --tta
    python -m search.evaluate --model models:/default@champion --data /path/to/test --out evaluation/

Every test image is predicted at its own size (resized by the model's `data.scale` and tiled as its
training configured, then brought back to the original resolution) and ONE confusion matrix is
accumulated over all of them: per-class IoU, mIoU (mean over the classes present in the labels or the
predictions) and pixel accuracy, printed as tables. `--out` receives `evaluation.json`,
`confusion.png` and `worst/`, the images with the lowest mIoU. The figures are logged to MLflow as
`test_miou`, `test_pixel_acc` and `test_iou/<class>` on the model's run and on its LoggedModel, the
folder as a dataset input with context `testing`, and `test_miou` as a tag on the model's registry
versions (`--no-log` to skip). The folder may use any layout and label convention `search.run --data`
reads; without its own `dataset.toml` it is read with the conventions stored with the model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from rich.console import Console

from search.evaluation_output import evaluation_record, print_scores, write_confusion, write_json, write_worst
from search.predict import ArtifactError, ModelOrigin, load_source_checkpoint
from search.settings import configure_process
from search.study.lookup import StudyNotFoundError
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI
from search.tracking.evaluation_log import log_test_results, resolve_targets, testing_dataset
from seg.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from seg.data import SPEC_FILE, DatasetError, Split, load_labelled_folder, read_dataset_spec
from seg.loaders import CLASSES_FILE, read_classes_file
from seg.predict import Predictor
from seg.scoring import score_folder

N_WORST = 4


class ClassCountError(ValueError):
    """The test folder declares a number of classes other than the model's."""


class NotLoggedError(RuntimeError):
    """The scores are computed (and written), but logging them to MLflow failed."""


def check_declared_classes(root: Path, ckpt: Checkpoint) -> None:
    """Refuse a folder whose `dataset.toml` classes or `classes.txt` name another number of classes than
    the model predicts (a folder that names none is read with the model's classes)."""
    k = ckpt.config.model.num_classes
    for path, names in ((root / SPEC_FILE, read_dataset_spec(root).class_names),
                        (root / CLASSES_FILE, read_classes_file(root))):
        if names is None:
            continue
        if len(names) != k:
            raise ClassCountError(f"{path} names {len(names)} classes but the model predicts {k} "
                                  f"({', '.join(ckpt.class_names)}); a test folder must use the model's classes")
        if tuple(names) != tuple(ckpt.class_names):  # same count: the values decide, but say so
            warnings.warn(f"{path} names the classes {list(names)}, the model {list(ckpt.class_names)}; label "
                          "value i is scored as the model's class i", UserWarning, stacklevel=2)


def read_test_folder(root: Path, ckpt: Checkpoint) -> Split:
    """The labelled test folder in any layout `search.run --data` reads, decoded to the model's classes:
    with its own dataset.toml as that file says, else with the conventions stored with the model
    (ignore value, label map, binary masks, colour table). Raises DatasetError (a ValueError) naming the
    file: images without labels, label values outside the model's classes, sizes that differ."""
    check_declared_classes(root, ckpt)
    # The stored spec is the one training resolved (binary rule included; the default spec for checkpoints
    # older than specs, which is how they were trained): no new detection that could read the folder otherwise.
    spec = None if (root / SPEC_FILE).is_file() else ckpt.spec
    return load_labelled_folder(root, ckpt.config.model.num_classes, spec)


def load_model(checkpoint: str | Path | None, model: str | None, study: str | None, trial: int | None,
               storage: str, tracking_uri: str) -> tuple[Checkpoint, ModelOrigin]:
    """The checkpoint file, MLflow model or study trial named (exactly one way), and where it came from."""
    if checkpoint is not None:
        if model or study or trial is not None:
            raise ArtifactError(f"--checkpoint names the model itself; drop --model/--study/--trial "
                                f"(got --checkpoint {checkpoint})")
        try:
            return load_checkpoint(checkpoint), ModelOrigin(f"checkpoint {checkpoint}")
        except CheckpointError as err:
            raise ArtifactError(str(err)) from err
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        return load_source_checkpoint(model, study, trial, storage, tracking_uri, Path(tmp))


def evaluate_folder(data: str | Path, out: Path | None = None, *, study: str | None = None,
                    trial: int | None = None, model: str | None = None, checkpoint: str | Path | None = None,
                    storage: str = DEFAULT_STORAGE,
                    tracking_uri: str = DEFAULT_TRACKING_URI, device: str = "auto", tta: bool = False,
                    worst: int = N_WORST, log: bool = True, console: Console | None = None) -> dict[str, Any]:
    """Score the model that `checkpoint` (a file), `model` (an MLflow model URI) or `study`/`trial` name
    on the labelled folder `data` (a checkpoint file has no MLflow run: nothing is logged); returns the
    evaluation (what `evaluation.json` holds). With `out`, writes the files there; with `console`,
    prints the tables; with `log`, logs the figures to MLflow (after the files are written).
    Raises ArtifactError, StudyNotFoundError, ValueError (DatasetError, ClassCountError), or NotLoggedError
    when MLflow failed after the scores were computed (and written)."""
    root = Path(data)
    ckpt, origin = load_model(checkpoint, model, study, trial, storage, tracking_uri)
    split = read_test_folder(root, ckpt)
    if not len(split):
        raise DatasetError(f"test folder {root} holds no labelled image")
    predictor = Predictor(ckpt, device=device, tta=tta)
    names = tuple(ckpt.class_names)
    folder = score_folder(predictor.predict, split, ckpt.config.model.num_classes)
    dataset = testing_dataset(root, split, names)
    targets, log_error = None, None
    if log:
        try:
            targets = resolve_targets(tracking_uri, origin)
        except MlflowException as err:  # the scores are still written below
            log_error = err
    worst_images = folder.worst(worst)
    record = evaluation_record(
        folder, names, worst_images, model=origin.description, data=str(root.resolve()),
        dataset={"name": dataset.name, "digest": dataset.digest}, tta=tta,
        run_id=origin.run_id, model_id=targets.model_id if targets else origin.model_id,
        registry_versions=[f"{n}/{v}" for n, v in targets.versions] if targets else [])
    files = []
    if out is not None:
        files = [write_json(out, record), write_confusion(out, record)]
        write_worst(out, predictor, split, worst_images)
    if console is not None:
        print_scores(console, record)
    if targets is not None:
        try:
            log_test_results(tracking_uri, targets, folder.scores, names, dataset, files, tta=tta)
        except MlflowException as err:
            log_error = err
    if log_error is not None:
        where = f"written to {out}" if out is not None else "computed"
        raise NotLoggedError(f"the scores are {where} (test mIoU {folder.scores.miou:.4f}), but logging them to "
                             f"MLflow at {tracking_uri} failed: {log_error}") from log_error
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path,
                   help="labelled test folder (ROOT/images + ROOT/labels, or any layout search.run --data reads)")
    p.add_argument("--out", required=True, type=Path, help="output folder: evaluation.json, confusion.png, worst/")
    p.add_argument("--study", help="the study's name in the storage (default: default); its best trial unless --trial")
    p.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    p.add_argument("--model", help="an MLflow model URI, e.g. models:/NAME@champion (instead of --study/--trial)")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint file (seg.train's best.pt) instead of an MLflow "
                   "model; nothing is logged")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="Optuna storage URL or journal file path (default: %(default)s)")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                   help="MLflow tracking (and registry) URI (default: %(default)s)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")
    p.add_argument("--worst", type=int, default=N_WORST,
                   help="how many of the lowest-mIoU images to draw (default: %(default)s)")
    p.add_argument("--no-log", action="store_true", help="write and print only; log nothing to MLflow")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process()
    console = Console()
    try:
        record = evaluate_folder(args.data, args.out, study=args.study, trial=args.trial, model=args.model,
                                 checkpoint=args.checkpoint, storage=args.storage, tracking_uri=args.tracking_uri,
                                 device=args.device, tta=args.tta, worst=args.worst, log=not args.no_log,
                                 console=console)
    except (ArtifactError, StudyNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MlflowException as err:
        print(f"error: MLflow at {args.tracking_uri}: {err}", file=sys.stderr)
        return 2
    except NotLoggedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    console.print(f"wrote {args.out / 'evaluation.json'}, confusion.png and {len(record['worst'])} of the worst "
                  f"images under {args.out / 'worst'}")
    if record["run_id"] and not args.no_log:
        versions = ", ".join(record["registry_versions"]) or "none registered"
        console.print(f"logged test_miou {record['miou']:.4f} to MLflow run {record['run_id']}, model "
                      f"{record['model_id'] or '-'}, registry versions: {versions}", soft_wrap=True)
    elif not args.no_log:
        console.print(f"nothing logged to MLflow: {record['model']} is not an MLflow run's model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
