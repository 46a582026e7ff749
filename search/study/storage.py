"""The Optuna storage: its default URL, opening it (RDB or journal, with a heartbeat or lease; a
database that cannot be reached is a one-line `StorageUnavailable` naming the URL, password hidden),
and the rule that several workers never share one SQLite file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
import sqlalchemy.exc

from search.study.journal import check_journal
from search.study.lease import LeasedJournalStorage, StaleCallback

DEFAULT_STORAGE = "sqlite:///studies/optuna.db"
CONNECT_TIMEOUT_S = 20  # PostgreSQL: fail with a clear error instead of waiting minutes for a lost host


def ensure_sqlite_parent(uri: str) -> None:
    """`sqlite:///dir/x.db` needs `dir/` to exist before the first connection."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 stale_trial_callback: StaleCallback | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: RDB (sqlite/postgresql/mysql) or a journal file path.

    With a heartbeat interval, trials whose worker died are found and handed to the callback:
    Optuna's heartbeat on RDB storages, our lease on the journal (see search/study/lease.py).
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
    if url.startswith("postgresql") and "connect_timeout" not in url:
        # A firewalled host would otherwise hang for the OS's TCP timeout (minutes) before failing.
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    heartbeat = {} if heartbeat_interval is None else {
        "heartbeat_interval": heartbeat_interval, "grace_period": grace_period or 3 * heartbeat_interval,
        "heartbeat_stale_trial_callback": stale_trial_callback}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError) as err:
        # Connecting is the first thing RDBStorage does: an unreachable server, a wrong password or a
        # malformed URL is the user's to fix, so say which storage and why, not SQLAlchemy's traceback.
        raise StorageUnavailable(url, err) from None


class StorageUnavailable(ValueError):
    """The Optuna storage cannot be opened (server down, wrong credentials, bad URL)."""

    def __init__(self, url: str, err: Exception) -> None:
        cause = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        fix = ("expected postgresql://USER:PASSWORD@HOST[:PORT]/DB, sqlite:///PATH or a journal file path"
               if isinstance(err, sqlalchemy.exc.ArgumentError) else
               "check that the database server is running and reachable from this machine, and the URL's user, "
               "password and database")
        super().__init__(f"cannot open the Optuna storage {redact(url)}: {cause}; {fix}")


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def is_journal(url: str) -> bool:
    return "://" not in url


def check_shared_storage(url: str, workers: int) -> None:
    """Several processes must not share one SQLite file: refuse, and give the command that works."""
    if workers > 1 and url.startswith("sqlite"):
        raise ValueError(
            f"--workers {workers} with the SQLite storage {url}: SQLite serialises every write behind one file lock "
            "and several workers hammering it fail with 'database is locked'. Use Optuna's journal file, e.g. "
            "--storage studies/optuna.journal, or PostgreSQL, e.g. --storage postgresql://USER@HOST/DB")
