"""A stored study's identity: direction, metric, space and data may not change when a study is resumed.

The first run stores the definition's hash and body as study user attrs; a later run with a
different definition is refused with what changed, so results of two searches never mix. A study on a
folder dataset also stores the dataset's folder, counts and content hash; a later run on data with
another content hash is refused with both shown (`check_dataset`).
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from search.study.definition import StudyDef

IDENTITY_ATTR = "definition_hash"
IDENTITY_BODY_ATTR = "definition"


class StudyMismatchError(ValueError):
    """The stored study was created from a different definition (direction, metric or space)."""


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
            stored, now = old_space.get(name, "absent"), new_space.get(name, "absent")
            changes.append(f"space {name}: stored {stored}, file {now}")
    return changes or ["the stored definition hash differs"]


# The folder dataset a study runs on: {"root", "counts": {"train", "val"}, "content_hash"}, from the first run.
DATASET_ATTR = "dataset"


class DataMismatchError(StudyMismatchError):
    """The stored study ran on other data (another content hash) than the data given now."""


def dataset_identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What a study remembers of its data: the folder, the image counts and the content hash of the decoded
    pixels and labels (search.tracking.fingerprint)."""
    return {"root": str(fingerprint["root"]), "counts": dict(fingerprint["counts"]),
            "content_hash": fingerprint["content_hash"]}


def check_dataset(study: optuna.Study, given: dict[str, Any], stored: dict[str, Any] | None, *,
                  record: bool) -> None:
    """Refuse to resume a study on data whose content hash differs from the stored one; show both.

    `stored`: the study's DATASET_ATTR (or what an older study's MLflow run recorded); None: nothing is
    known, and with `record` the given data becomes the study's."""
    if stored is not None and stored.get("content_hash") != given["content_hash"]:
        name = study.study_name
        raise DataMismatchError(
            f"study {name!r} in the storage was run on different data than the data given now:\n"
            f"  stored: {_describe(stored)}\n  given:  {_describe(given)}\n"
            f"Its trials would no longer compare. Use --study-name {name}-{given['content_hash'][:6]} to start a "
            f"new study on this data, or pass the stored data (--data {stored.get('root')}) to resume this one.")
    if record and study.user_attrs.get(DATASET_ATTR) is None:
        study.set_user_attr(DATASET_ATTR, given)


def _describe(data: dict[str, Any]) -> str:
    counts = data.get("counts") or {}
    return (f"{data.get('root')} (train {counts.get('train', '?')}, val {counts.get('val', '?')} images), "
            f"content hash {data.get('content_hash')}")
