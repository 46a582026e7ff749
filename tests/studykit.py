"""The tiny study every test runs: one writer for its TOML file (`study_toml`), and `StudyEnv`, the file
plus Optuna and MLflow storages under one folder, with the command lines of `search.run` and of the
read-side tools (`search.predict`, `search.report`, `search.registry`, `search.ui`) pointed at them.

The default study is a depth-2 UNet (4 -> 16 channels) on 16 + 6 procedural images with 32 px
crops; `TINY` is the smallest one (4 -> 8 channels on 8 + 4 images, adam only) for the tests that
only need a finished study to look at. Tests vary what they need through keyword arguments; a
`space` entry replaces the default dimension of that name (`None` removes it).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from search.plan.plan_toml import toml_key as _key  # the TOML writer the planner uses
from search.plan.plan_toml import toml_value
from search.run import main as run_main
from search.study.storage import open_storage

PARENT_ATTR = "mlflow_parent_run_id"
PARENT_TAG = "mlflow.parentRunId"
STATUS_FOR_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}  # Optuna state -> MLflow run status

# The default search space, by dotted name: fixed values and ranges as the study file writes them.
SPACE: dict[str, Any] = {
    "model.depth": 2,
    "model.base_channels": 4,
    "model.max_channels": 16,
    "model.upsample": {"choices": ["bilinear", "transpose"]},
    "train.optimizer": {"choices": ["adam", "sgd"]},
    "train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
    "train.momentum": {"low": 0.8, "high": 0.95},
    "train.batch_size": 8,
    "transforms.crop_size": 32,
}

# The smallest study: 8 + 4 images, 4 -> 8 channels, adam only (a trial of one epoch takes ~1 s).
TINY: dict[str, Any] = {
    "synth_train": 8,
    "synth_val": 4,
    "space": {"model.max_channels": 8, "model.upsample": None, "train.optimizer": "adam",
              "train.lr": {"low": 2e-3, "high": 2e-2, "log": True}, "train.momentum": None},
}

def study_toml(name: str, *, trials: int = 4, epochs: int = 2, sampler: str = "random", pruner: str = "none",
               pruner_settings: Mapping[str, Any] | None = None, synth_train: int = 16, synth_val: int = 6,
               space: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
               metric: str = "val_miou", direction: str = "maximize") -> str:
    """The text of a tiny study file named `name`.

    `space` maps dotted names ("model.depth") to a fixed value or a range ({"low": .., "high": ..},
    {"choices": [..]}): it replaces that default dimension of `SPACE`, adds a new one, or removes it
    (`None`). `pruner_settings` are the [pruner] keys after `name`; `baseline` the [baseline] params.
    """
    dims = dict(SPACE)
    for dim, value in (space or {}).items():
        if value is None:
            dims.pop(dim, None)
        else:
            dims[dim] = value
    sections: dict[str, list[str]] = {}
    for dim, value in dims.items():
        section, key = dim.split(".", 1)
        sections.setdefault(section, []).append(f"{_key(key)} = {toml_value(value)}")
    lines = [
        "[study]", f"name = {toml_value(name)}", f"metric = {toml_value(metric)}",
        f"direction = {toml_value(direction)}", "",
        "[data]", "num_classes = 10", f"synth_train = {synth_train}", f"synth_val = {synth_val}", "",
        "[budget]", f"trials = {trials}", f"max_epochs = {epochs}", "",
        "[sampler]", f"name = {toml_value(sampler)}", "",
        "[pruner]", f"name = {toml_value(pruner)}",
        *(f"{_key(k)} = {toml_value(v)}" for k, v in (pruner_settings or {}).items()), "",
    ]
    for section, entries in sections.items():
        lines += [f"[space.{section}]", *entries, ""]
    if baseline:
        lines += ["[baseline]", f"params = {toml_value(baseline)}", ""]
    return "\n".join(lines)


def write_study(folder: Path, name: str, **toml: Any) -> Path:
    """Write `study_toml(name, **toml)` to FOLDER/NAME.toml; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(study_toml(name, **toml))
    return path


@functools.cache
def _tracking_template() -> Path:
    """One MLflow SQLite database with its schema made, for this process (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()  # creates the tables
    return folder / "mlflow.db"


def seed_tracking_db(db: Path) -> None:
    """Put an MLflow SQLite database whose schema is already made at `db` (absent): making the schema runs
    MLflow's migrations, about 2.5 s a store, and nearly every test makes a fresh store. The copy is what a
    user's second run finds; the tests of creating the schema pass `fresh_tracking=True` to StudyEnv."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_tracking_template(), db)


class StudyEnv:
    """A tiny study file and the storages of its runs, all under `root`.

    `name` is the study's name (in the file, and in the storages unless a run says `--study-name`).
    By default Optuna is `sqlite:///ROOT/optuna.db` and MLflow `sqlite:///ROOT/mlruns/mlflow.db`, the
    latter with its schema already made (`seed_tracking_db`; `fresh_tracking=True`: made by the run);
    pass `storage` (a journal path, a PostgreSQL URL) or `tracking_uri` (a server's URL) to use others.
    The keyword arguments `**toml` go to `study_toml` for the file ROOT/NAME.toml.
    """

    def __init__(self, root: Path, name: str = "tiny", *, storage: str | None = None,
                 tracking_uri: str | None = None, fresh_tracking: bool = False, **toml: Any) -> None:
        self.root, self.name = root, name
        self.storage = storage or f"sqlite:///{root}/optuna.db"
        self.tracking_uri = tracking_uri or f"sqlite:///{root}/mlruns/mlflow.db"
        db = root / "mlruns" / "mlflow.db"
        if tracking_uri is None and not fresh_tracking and not db.exists():
            seed_tracking_db(db)
        self.file = write_study(root, name, **toml)

    def write(self, name: str, **toml: Any) -> Path:
        """Another study file beside this one (ROOT/NAME.toml), e.g. a second study in the same storages."""
        return write_study(self.root, name, **toml)

    # ----------------------------------------------------------------- command lines

    def run_args(self, *extra: str, file: Path | None = None, device: str = "cpu") -> list[str]:
        """`search.run`'s arguments: the study file (this one unless `file`), both storages, the device."""
        return ["--study", str(file or self.file), "--storage", self.storage, "--tracking-uri", self.tracking_uri,
                "--device", device, *extra]

    def read_args(self, *extra: str, name: str | None = None) -> list[str]:
        """What every read-side tool takes: `--study NAME` (the name in the storage) and both storages."""
        return ["--study", name or self.name, "--storage", self.storage, "--tracking-uri", self.tracking_uri, *extra]

    def predict_args(self, out: Path, *extra: str, name: str | None = None) -> list[str]:
        """`search.predict`'s arguments on CPU, writing to `out`; `extra` holds the inputs and options."""
        return self.read_args("--device", "cpu", "--out", str(out), *extra, name=name)

    def run(self, *extra: str, file: Path | None = None, device: str = "cpu") -> int:
        """`search.run` in this process, as a user would run it; returns its exit code. The SIGTERM
        handler it installs is put back afterwards."""
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            return run_main(self.run_args(*extra, file=file, device=device))
        finally:
            signal.signal(signal.SIGTERM, sigterm)

    # ----------------------------------------------------------------- what the storages hold

    def study(self, name: str | None = None) -> optuna.Study:
        return optuna.load_study(study_name=name or self.name, storage=open_storage(self.storage))

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def trial_run(self, trial: optuna.trial.FrozenTrial) -> Run:
        """The MLflow run of a trial (its `mlflow_run_id` user attr)."""
        return self.client.get_run(trial.user_attrs["mlflow_run_id"])

    def experiment_id(self, name: str | None = None) -> str:
        name = name or self.name
        exp = self.client.get_experiment_by_name(name)
        assert exp is not None, f"no MLflow experiment named {name!r}"
        return exp.experiment_id

    def runs(self, name: str | None = None) -> list[Run]:
        return self.client.search_runs([self.experiment_id(name)], run_view_type=ViewType.ALL, max_results=1000)

    def parent_id(self, name: str | None = None) -> str:
        return self.study(name).user_attrs[PARENT_ATTR]

    def children(self, name: str | None = None) -> list[Run]:
        return self.client.search_runs([self.experiment_id(name)],
                                       filter_string=f"tags.{PARENT_TAG} = '{self.parent_id(name)}'",
                                       run_view_type=ViewType.ALL, max_results=1000)


def make_tiny_study(root: Path, monkeypatch: pytest.MonkeyPatch, trials: int = 2, epochs: int = 1,
                    run_args: tuple[str, ...] = ()) -> StudyEnv:
    """The smallest study (`TINY`, named "tiny"), run once: `trials` trials of `epochs` epochs in SQLite
    storages under `root`, with the dataset cache there too; `run_args` go to `search.run`."""
    monkeypatch.setenv("SEG_CACHE_DIR", str(root / "cache"))
    tiny = StudyEnv(root, "tiny", trials=trials, epochs=epochs, **TINY)
    assert tiny.run(*run_args) == 0
    return tiny
