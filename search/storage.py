"""Optuna and MLflow storages: defaults, one-time schema creation, and study create/resume checks."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from search.journal import check_journal
from search.lease import LeasedJournalStorage, StaleCallback
from search.study_def import StudyDef

DEFAULT_STORAGE = "sqlite:///studies/optuna.db"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
IDENTITY_ATTR = "definition_hash"
IDENTITY_BODY_ATTR = "definition"


class StudyMismatchError(ValueError):
    """The stored study was created from a different definition (direction, metric or space)."""


def ensure_sqlite_parent(uri: str) -> None:
    """`sqlite:///dir/x.db` needs `dir/` to exist before the first connection."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 stale_trial_callback: StaleCallback | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: RDB (sqlite/postgresql/mysql) or a journal file path.

    With a heartbeat interval, trials whose worker died are found and handed to the callback:
    Optuna's heartbeat on RDB storages, our lease on the journal (see search/lease.py).
    Creating the storage here, once, builds the schema before any worker connects.
    """
    ensure_sqlite_parent(url)
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)
        backend = JournalFileBackend(str(path))
        if heartbeat_interval is None:
            return optuna.storages.JournalStorage(backend)
        return LeasedJournalStorage(backend, heartbeat_interval, grace_period or 3 * heartbeat_interval,
                                    stale_trial_callback)
    # SQLite: wait up to 60 s for a lock instead of failing a trial with "database is locked".
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    if heartbeat_interval is None:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                      grace_period=grace_period or 3 * heartbeat_interval,
                                      heartbeat_stale_trial_callback=stale_trial_callback)


def is_journal(url: str) -> bool:
    return "://" not in url


def check_shared_storage(url: str, workers: int) -> None:
    """Several processes must not share one SQLite file: refuse, and give the command that works."""
    if workers > 1 and url.startswith("sqlite"):
        raise ValueError(
            f"--workers {workers} with the SQLite storage {url}: SQLite serialises every write behind one file lock "
            "and several workers hammering it fail with 'database is locked'. Use Optuna's journal file, e.g. "
            "--storage studies/optuna.journal, or PostgreSQL, e.g. --storage postgresql://USER@HOST/DB")


def ensure_tracking_schema(tracking_uri: str) -> None:
    """Touch the MLflow store once so its tables exist before trials (and workers) start."""
    from search.tracking import Tracker

    ensure_sqlite_parent(tracking_uri)
    Tracker(tracking_uri).ping()


def check_identity(study: optuna.Study, sdef: StudyDef) -> None:
    """Refuse to resume a study whose stored definition differs; say what changed."""
    stored_hash = study.user_attrs.get(IDENTITY_ATTR)
    if stored_hash is None:
        study.set_user_attr(IDENTITY_ATTR, sdef.identity_hash())
        study.set_user_attr(IDENTITY_BODY_ATTR, json.dumps(sdef.identity(), sort_keys=True))
        return
    if stored_hash == sdef.identity_hash():
        return
    stored = json.loads(study.user_attrs.get(IDENTITY_BODY_ATTR, "{}"))
    raise StudyMismatchError(
        f"study {study.study_name!r} in the storage was created from a different definition than {sdef.path}:\n  "
        + "\n  ".join(describe_changes(stored, sdef.identity()))
        + "\nUse --study-name NEW_NAME to start a new study with this file, or restore the file.")


def describe_changes(old: dict, new: dict) -> list[str]:
    changes = []
    for key in ("direction", "metric"):
        if old.get(key) != new.get(key):
            changes.append(f"{key}: stored {old.get(key)!r}, file {new.get(key)!r}")
    old_space, new_space = old.get("space", {}), new.get("space", {})
    for name in sorted(set(old_space) | set(new_space)):
        if old_space.get(name) != new_space.get(name):
            changes.append(f"space {name}: stored {old_space.get(name, 'absent')}, file {new_space.get(name, 'absent')}")
    return changes or ["the stored definition hash differs"]
