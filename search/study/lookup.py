"""Find a stored Optuna study by name, with an error that lists the studies that do exist."""

from __future__ import annotations

from pathlib import Path

import optuna

from search.study.storage import open_storage


class StudyNotFoundError(LookupError):
    """No study of that name in the storage (or no storage at that place); the message says which exist."""


def storage_must_exist(url: str) -> None:
    """Looking at results must not create an empty storage by accident (a typo in the path)."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
    elif "://" not in url:
        path = Path(url)  # a journal file
    else:
        return  # a database server: its own connection error is specific enough
    if not path.is_file():
        raise StudyNotFoundError(f"no storage at {path} (from {url!r}): run `python -m search.run` first, "
                                 "or pass the storage the study was run with")


def load_named_study(name: str, storage_url: str) -> optuna.Study:
    storage_must_exist(storage_url)
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        raise StudyNotFoundError(f"no study named {name!r} in {storage_url}; stored studies: {sorted(names)}")
    return optuna.load_study(study_name=name, storage=storage)


def study_id(name: str, storage_url: str) -> int:
    """The storage's id of the study (optuna-dashboard's URLs use it)."""
    return open_storage(storage_url).get_study_id_from_name(name)
