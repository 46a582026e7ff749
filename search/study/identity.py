"""A stored study's identity: direction, metric and space may not change when a study is resumed.

The first run stores the definition's hash and body as study user attrs; a later run with a
different definition is refused with what changed, so results of two searches never mix.
"""

from __future__ import annotations

import json

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
