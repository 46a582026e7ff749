"""MLflow Model Registry: the study's best trial is registered under the study's name, alias `champion`.

`search.run` adds `ChampionCallback` to the study, so this happens on its own: when a finished trial
is the study's best, its run's logged model (`models:/m-...`, the LoggedModel named `model` among the
run's outputs) becomes a new version of the registered model named after the study, and the alias
`champion` moves to it. Load or serve it with

    mlflow.pyfunc.load_model("models:/NAME@champion")
    python -m search.predict --model models:/NAME@champion photos/ --out predictions/
    mlflow models serve -m models:/NAME@champion --env-manager local    # with MLFLOW_TRACKING_URI set

For a study that ran before the registry was wired in (or to repair the alias by hand):

    python -m search.registry --study NAME [--storage URL] [--tracking-uri URI]

After `search.confirm`, `champion` points at the retrain of the configuration with the best
confirmed mean (`crown_confirmed`), its version tagged with that mean, its sd and the seeds; the
search then leaves a confirmed champion alone (rerun `search.confirm` to include new trials, or
`search.registry` to go back to the search's best).

Several workers may finish trials at the same time. Each registers only its own trial (so a run is
never registered twice by two workers), and after moving the alias each re-reads the study's best
and moves the alias again if the best changed meanwhile: the last write is always the current best.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

import optuna
from mlflow.entities import LoggedModelStatus, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from search.settings import configure_process
from search.study.confirm_record import confirmed_figure
from search.study.lookup import StudyNotFoundError, load_named_study
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, RUN_ID_ATTR
from search.tracking.pyfunc import MODEL_ARTIFACT

CHAMPION = "champion"
# Re-reading the best after moving the alias converges in one extra pass unless trials keep
# finishing; the bound only guards against a storage that keeps changing under us.
MAX_PASSES = 5
EXISTS_CODES = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)}


class RegistryError(RuntimeError):
    """The best trial cannot be registered (no run id, no model artifact); the message says why."""


def registry_client(tracking_uri: str) -> MlflowClient:
    """The registry lives in the tracking store (explicit, so no global MLflow state is involved)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION}"


def best_complete_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best trial, or None while no trial is COMPLETE."""
    try:
        return study.best_trial
    except ValueError:  # Optuna's way of saying "no complete trial yet"
        return None


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description=f"Best trials of the Optuna study {name!r}")
    except MlflowException as err:
        if err.error_code not in EXISTS_CODES:  # another worker created it first: fine
            raise


def version_for_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The (oldest) version of `name` registered from `run_id`, if any."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def run_model(client: MlflowClient, run: Run) -> tuple[str, str | None]:
    """(where its files are, model id) of the run's model: its READY LoggedModel named `model`, or for
    a study logged before models were LoggedModels, the run's own `model/` folder. Raises RegistryError.

    The version's source is the LoggedModel's artifact location, with its id as the version's
    `model_id` tag: MLflow's SQL registry would look a `models:/m-...` source up through the global
    tracking URI, not ours, and keeps no model id of its own."""
    for output in run.outputs.model_outputs if run.outputs else []:
        model = client.get_logged_model(output.model_id)
        if model.name == MODEL_ARTIFACT and model.status == LoggedModelStatus.READY:
            return model.artifact_location, model.model_id
    if any(f.path == f"{MODEL_ARTIFACT}/MLmodel" for f in client.list_artifacts(run.info.run_id, MODEL_ARTIFACT)):
        return f"{run.info.artifact_uri}/{MODEL_ARTIFACT}", None
    raise RegistryError(f"MLflow run {run.info.run_id} has no logged model named {MODEL_ARTIFACT!r}")


def register_run(client: MlflowClient, name: str, run_id: str, tags: dict[str, str], description: str,
                 label: str) -> ModelVersion:
    """A version of `name` for the run's model; reuses the existing one for the same run."""
    existing = version_for_run(client, name, run_id)
    if existing is not None:
        return existing
    try:
        source, model_id = run_model(client, client.get_run(run_id))
    except RegistryError as err:
        raise RegistryError(f"{label}: {err}") from None
    ensure_registered_model(client, name)
    tags = {**tags, **({"model_id": model_id} if model_id else {})}
    return client.create_model_version(name, source, run_id=run_id, tags=tags, model_id=model_id,
                                       description=description)


def register_trial(client: MlflowClient, name: str, trial: optuna.trial.FrozenTrial) -> ModelVersion:
    """A version of `name` for the trial's `model/`; reuses the existing one for the same run."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        raise RegistryError(f"trial {trial.number} has no {RUN_ID_ATTR} user attr; nothing to register")
    tags = {"study_name": name, "trial_number": str(trial.number), "val_miou": f"{trial.value:.6f}"}
    return register_run(client, name, run_id, tags, f"trial {trial.number}, val mIoU {trial.value:.4f}",
                        f"trial {trial.number}")


def confirmed_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The `champion` version if `search.confirm` crowned it, else None."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model or alias yet
        return None
    return version if "confirmed_mean" in version.tags else None


def crown_confirmed(client: MlflowClient, name: str, config: dict[str, Any], retrain: dict[str, Any]) -> ModelVersion:
    """Point `champion` at a confirmed configuration's best retrain (an entry of the study's confirm record)."""
    seeds = [r["seed"] for r in config["runs"] if r["status"] == "FINISHED"]
    tags = {"study_name": name, "trial_number": str(config["trial"]), "source": "confirm",
            "val_miou": f"{retrain['best']:.6f}", "search_val_miou": f"{config['search_value']:.6f}",
            "confirmed_mean": f"{config['final_mean']:.6f}", "confirmed_best_mean": f"{config['best_mean']:.6f}",
            "confirmed_seeds": ",".join(map(str, seeds)), "confirmed_of_seeds": str(len(config["runs"]))}
    if config["final_sd"] is not None:  # one finished seed has no sd: no tag, rather than a false 0
        tags |= {"confirmed_sd": f"{config['final_sd']:.6f}", "confirmed_best_sd": f"{config['best_sd']:.6f}"}
    description = (f"trial {config['trial']}'s configuration retrained with seeds {seeds}: final val mIoU "
                   f"{confirmed_figure(config, len(config['runs']))} (search: {config['search_value']:.4f})")
    version = register_run(client, name, retrain["run_id"], tags, description,
                           f"confirm of trial {config['trial']} seed {retrain['seed']}")
    for key, value in tags.items():  # a version registered earlier gets today's figures
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return version


def move_champion(client: MlflowClient, name: str, study: optuna.Study, own_trial: int | None) -> ModelVersion | None:
    """Point `champion` at the study's current best; register only `own_trial` (None: any trial).

    Returns the version the alias ends on, or None when the best is another worker's trial that is
    not registered yet (that worker's callback will register it and move the alias).
    """
    version = None
    for _ in range(MAX_PASSES):
        best = best_complete_trial(study)
        if best is None:
            return None
        if own_trial is None or best.number == own_trial:
            version = register_trial(client, name, best)
        else:
            version = version_for_run(client, name, best.user_attrs.get(RUN_ID_ATTR, ""))
            if version is None:
                return None
        client.set_registered_model_alias(name, CHAMPION, version.version)
        after = best_complete_trial(study)
        if after is not None and after.number == best.number:
            return version
    return version


class ChampionCallback:
    """Optuna study callback: when the finished trial is the study's best, register its model and move `champion`."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            return
        best = best_complete_trial(study)
        if best is None or best.number != trial.number:
            return
        try:
            client = registry_client(self.tracking_uri)
            if confirmed_champion(client, self.model_name) is not None:
                return  # a confirmed champion stays until the next search.confirm
            move_champion(client, self.model_name, study, own_trial=trial.number)
        except (MlflowException, RegistryError, OSError) as err:
            # The trial and its run are already stored; a registry hiccup must not stop the study.
            # `python -m search.registry --study NAME` repairs the alias afterwards.
            warnings.warn(f"could not register trial {trial.number} of {study.study_name!r} as "
                          f"{champion_uri(self.model_name)}: {err}", RuntimeWarning, stacklevel=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.registry",
                                description="Register a study's best trial and move the `champion` alias to it.")
    p.add_argument("--study", required=True, help="study name in the Optuna storage")
    p.add_argument("--model-name", help="registered model name (default: the study name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking (and registry) URI")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process()
    name = args.model_name or args.study
    try:
        study = load_named_study(args.study, args.storage)
        version = move_champion(registry_client(args.tracking_uri), name, study, own_trial=None)
    except (StudyNotFoundError, MlflowException, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if version is None:
        print(f"error: study {args.study!r} has no complete trial yet", file=sys.stderr)
        return 2
    print(f"{champion_uri(name)} -> version {version.version} (run {version.run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
