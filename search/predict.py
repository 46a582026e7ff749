"""Predict with the best trial of a study (or a chosen one), found through Optuna and MLflow.

    python -m search.predict --study default photos/ extra.jpg --out predictions/
    python -m search.predict --study default --trial 12 photos/ --out predictions/
    python -m search.predict --model models:/default@champion photos/ --out predictions/

The trial's `mlflow_run_id` user attr leads to its MLflow run; the checkpoint artifact is
downloaded, checked against the trial's config, and label PNGs and overlays are written at each
input's own size. With `--model`, any MLflow model URI of a logged UNet (`models:/NAME@champion`,
`models:/NAME/3`, a logged model's `models:/m-...`, `runs:/RUN/model`) is downloaded and its
checkpoint used the same way.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from search.settings import configure_process
from search.study.confirm_record import read_record
from search.study.lookup import StudyNotFoundError, load_named_study
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, RUN_ID_ATTR
from seg.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from seg.predict import Predictor, iter_inputs, predict_files

CHECKPOINT_ARTIFACT = "checkpoint/best.pt"
LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]+")
RUNS_URI = re.compile(r"runs:/([0-9a-f]+)/")
PYFUNC_FLAVOR = "python_function"


class ArtifactError(RuntimeError):
    """A trial's run or checkpoint is missing or damaged; the message says which."""


@dataclass(frozen=True)
class ModelOrigin:
    """Where a checkpoint came from, for whoever logs results back to it (`search.evaluate`).

    `run_id`: the MLflow run that trained it; `model_id`: its LoggedModel (`m-...`) when the URI named
    it; `version`: (registered model name, version) when the URI named a registry version. What the
    URI did not name stays None (e.g. a study's trial gives only its run)."""

    description: str
    run_id: str | None = None
    model_id: str | None = None
    version: tuple[str, str] | None = None


def select_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if number is None:
        if not complete:
            raise ArtifactError(f"study {study.study_name!r} has no complete trial yet")
        return study.best_trial
    matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not matches:
        raise ArtifactError(f"study {study.study_name!r} has no trial {number}")
    if matches[0].state != optuna.trial.TrialState.COMPLETE:
        raise ArtifactError(f"trial {number} of {study.study_name!r} is {matches[0].state.name}; "
                            "only COMPLETE trials have a checkpoint")
    return matches[0]


def fetch_checkpoint(trial: optuna.trial.FrozenTrial, tracking_uri: str, dst: Path) -> Checkpoint:
    """Download the trial's checkpoint and check it against the trial's stored config."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        raise ArtifactError(f"trial {trial.number} has no mlflow_run_id user attr")
    try:
        local = MlflowClient(tracking_uri).download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(dst))
    except (MlflowException, OSError) as err:
        raise ArtifactError(f"trial {trial.number}: could not fetch {CHECKPOINT_ARTIFACT} of MLflow run {run_id} "
                            f"from {tracking_uri}: {err}") from err
    try:
        ckpt = load_checkpoint(local)
    except CheckpointError as err:
        raise ArtifactError(f"trial {trial.number}, MLflow run {run_id}: {err}") from err
    stored = trial.user_attrs.get("config")
    if stored is not None and stored != ckpt.config.to_dict():
        raise ArtifactError(f"trial {trial.number}: the checkpoint's config differs from the trial's config "
                            f"(MLflow run {run_id}); the artifact does not belong to this trial")
    return ckpt


def resolve_model_uri(model_uri: str, tracking_uri: str) -> tuple[str, ModelOrigin]:
    """(where the model's files are, where it came from): a registry URI is resolved through the registry
    in the tracking store, explicitly, so no global MLflow URI is read or changed."""
    if not model_uri.startswith("models:/"):
        run = RUNS_URI.match(model_uri)
        return model_uri, ModelOrigin(f"model {model_uri}", run_id=run.group(1) if run else None)
    ref = model_uri[len("models:/"):].strip("/")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if LOGGED_MODEL_ID.fullmatch(ref):
        model = client.get_logged_model(ref)
        trial = model.tags.get("trial_number")
        return model.artifact_location, ModelOrigin(f"model {model_uri}" + (f" (trial {trial})" if trial else ""),
                                                    run_id=model.source_run_id, model_id=model.model_id)
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, number = ref.rsplit("/", 1)
        version = client.get_model_version(name, number)
    else:
        raise ArtifactError(f"{model_uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    trial = version.tags.get("trial_number")
    source = version.source
    model_id = version.model_id or version.tags.get("model_id")
    if version.model_id and source == f"models:/{version.model_id}":  # the LoggedModel's own files
        source = client.get_logged_model(version.model_id).artifact_location
    description = f"model {model_uri} (version {version.version}" + (f", trial {trial})" if trial else ")")
    return source, ModelOrigin(description, run_id=version.run_id or None, model_id=model_id or None,
                               version=(version.name, str(version.version)))


def fetch_model_checkpoint(model_uri: str, tracking_uri: str, dst: Path) -> tuple[Checkpoint, ModelOrigin]:
    """Download an MLflow model of a UNet (e.g. `models:/NAME@champion`) and load its checkpoint."""
    try:
        source, origin = resolve_model_uri(model_uri, tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                         tracking_uri=tracking_uri))
        flavor = Model.load(str(local)).flavors.get(PYFUNC_FLAVOR, {})
    except (MlflowException, OSError) as err:
        raise ArtifactError(f"could not fetch the model {model_uri} from {tracking_uri}: {err}") from err
    relative = flavor.get("artifacts", {}).get("checkpoint", {}).get("path")
    if not relative:
        raise ArtifactError(f"the model {model_uri} has no 'checkpoint' artifact in its {PYFUNC_FLAVOR} flavour: "
                            "not a UNet logged by search.run")
    try:
        return load_checkpoint(local / relative), origin
    except CheckpointError as err:
        raise ArtifactError(f"model {model_uri}: {err}") from err


@dataclass(frozen=True)
class PredictSettings:
    inputs: tuple[str, ...]
    out: Path
    model: str | None = None
    study: str | None = None
    trial: int | None = None
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    tta: bool = False
    device: str = "auto"


def parse_args(argv: list[str] | None) -> PredictSettings:
    p = argparse.ArgumentParser(prog="python -m search.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--model", help="an MLflow model URI, e.g. models:/NAME@champion (instead of --study/--trial)")
    p.add_argument("--study", help="the study's name in the storage, as search.run's summary prints it "
                   "(default: default)")
    p.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    return PredictSettings(**{**vars(args), "inputs": tuple(args.inputs)})


def checkpoint_from_study(study_name: str, trial_number: int | None, storage: str, tracking_uri: str,
                          dst: Path) -> tuple[Checkpoint, ModelOrigin]:
    """The chosen (or best) trial's checkpoint, and where it came from (the trial's run)."""
    study = load_named_study(study_name, storage)
    trial = select_trial(study, trial_number)
    origin = ModelOrigin(f"trial {trial.number} of study {study.study_name!r} (val mIoU {trial.value:.4f})",
                         run_id=trial.user_attrs.get(RUN_ID_ATTR))
    final = final_model_note(study) if trial_number is None else None
    if final:
        print(final, file=sys.stderr)
    return fetch_checkpoint(trial, tracking_uri, dst), origin


def final_model_note(study: optuna.Study) -> str | None:
    """A note when the study's champion is a retrain after the search (search.confirm, or a [confirm]
    share): the best trial is then not the model the study crowned."""
    champion = (read_record(study) or {}).get("champion")
    if not champion:
        return None
    return (f"note: study {study.study_name!r} crowned the retrain of trial {champion['trial']} after the search "
            f"({champion['model']}); this uses its best trial. --model {champion['model']} uses the crowned model")


def load_source_checkpoint(model: str | None, study: str | None, trial: int | None, storage: str,
                           tracking_uri: str, dst: Path) -> tuple[Checkpoint, ModelOrigin]:
    """The checkpoint that `--model` or `--study`/`--trial` name (a study's best trial by default; the
    study `default` when neither is given). Raises ArtifactError when both are given."""
    if model and (study or trial is not None):
        raise ArtifactError(f"--model names the model itself; drop --study/--trial (got --model {model})")
    if model:
        return fetch_model_checkpoint(model, tracking_uri, dst)
    return checkpoint_from_study(study or "default", trial, storage, tracking_uri, dst)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process()
    try:
        files = iter_inputs(args.inputs)
        with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
            ckpt, origin = load_source_checkpoint(args.model, args.study, args.trial, args.storage,
                                                  args.tracking_uri, Path(tmp))
        written = predict_files(Predictor(ckpt, device=args.device, tta=args.tta), files, args.out)
    except (ArtifactError, StudyNotFoundError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{origin.description}: wrote {len(written)} label maps and overlays to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
