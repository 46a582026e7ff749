"""A study resumed on other data is refused: `search.run` shows both datasets (path, counts, content hash) and
the `--study-name` that starts a new study, with no traceback, and both storages stay exactly as they were.
Real tiny studies, checked through Optuna's and MLflow's own clients."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from PIL import Image

from search.plan.stored import PLAN_ATTR
from search.run import main as run_main
from search.study.definition import parse_study
from search.study.identity import DATASET_ATTR
from search.tracking.fingerprint import content_hash
from seg.data import load_dataset
from seg.synth import generate_dataset
from tests.plankit import relabel
from tests.studykit import TINY, StudyEnv


def _run(args: list[str]) -> int:
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        return run_main(args)
    finally:
        signal.signal(signal.SIGTERM, sigterm)


def _stored_state(env: StudyEnv, name: str) -> tuple[Any, ...]:
    """Everything a refused run could have touched: trials, study attrs, and every MLflow run's status and end."""
    study = env.study(name)
    trials = [(t.number, t.state, t.params, t.values, t.user_attrs) for t in study.trials]
    runs = sorted((r.info.run_id, r.info.status, r.info.end_time) for r in env.runs(name))
    return trials, study.user_attrs, runs


def _said(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())  # rich wraps long lines


def _three_classes(root: Path, seed: int, n_train: int, n_val: int) -> Path:
    """Small seg.synth scenes relabelled to 3 classes that every file holds (as tests.plankit's `three`)."""
    generate_dataset(root, seed=seed, n_train=n_train, n_val=n_val, min_size=40, max_size=56)
    relabel(root, lambda a: np.where(a == 0, 0, np.where(a <= 4, 1, 2)))
    return root


def test_a_planned_study_refuses_another_folder_of_the_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    # Two folders named "photos": the planned study's name comes from the basename, so both are "plan-photos".
    first = _three_classes(tmp_path / "a" / "photos", seed=1, n_train=8, n_val=3)
    other = _three_classes(tmp_path / "b" / "photos", seed=2, n_train=6, n_val=2)
    env = StudyEnv(tmp_path / "stores", "plan-photos")  # its storages; the planned runs take no --study
    stores = ["--storage", env.storage, "--tracking-uri", env.tracking_uri, "--device", "cpu"]
    common = ["--epochs", "1", "--timeout", "60", "--confirm", "0", *stores]
    assert _run(["--data", str(first), "--trials", "1", *common]) == 0
    stored = env.study().user_attrs[DATASET_ATTR]
    assert stored["root"] == str(first.resolve()) and stored["counts"] == {"train": 8, "val": 3}
    before = _stored_state(env, "plan-photos")
    capsys.readouterr()

    assert _run(["--data", str(other), "--trials", "1", *common]) == 2
    said = _said(capsys)
    classes = parse_study(tomllib.loads(env.study().user_attrs[PLAN_ATTR]), Path("plan.toml")).data["num_classes"]
    given = content_hash(load_dataset(other, classes))
    assert "different data" in said and "Traceback" not in said
    assert stored["content_hash"] in said and given in said and stored["content_hash"] != given
    assert str(first.resolve()) in said and str(other.resolve()) in said
    assert "train 8, val 3 images" in said and "train 6, val 2 images" in said
    assert f"--study-name plan-photos-{given[:6]}" in said
    assert _stored_state(env, "plan-photos") == before, "the refused run changed nothing"

    # The suggested name starts a new study on the other folder (here from the plan's copy, not planned
    # again, and set up only); the first one is untouched.
    plan_copy = str(tmp_path / "stores" / "plans" / "plan-photos.toml")
    assert _run(["--study", plan_copy, "--data", str(other), "--study-name", f"plan-photos-{given[:6]}",
                 "--trials", "0", *common]) == 0
    assert env.study(f"plan-photos-{given[:6]}").user_attrs[DATASET_ATTR]["content_hash"] == given
    assert _stored_state(env, "plan-photos") == before


def test_a_study_file_naming_data_root_refuses_changed_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    root = generate_dataset(tmp_path / "data", seed=3, n_train=8, n_val=3, min_size=40, max_size=56)
    env = StudyEnv(tmp_path / "stores", "rooted", trials=1, epochs=1, **TINY)
    env.file.write_text(env.file.read_text().replace("[data]\n", f"[data]\nroot = {str(root)!r}\n", 1))
    assert _run(env.run_args()) == 0
    stored = env.study().user_attrs[DATASET_ATTR]["content_hash"]
    before = _stored_state(env, "rooted")

    # Same folder, one label edited in place: the content hash, not the path, decides.
    label = root / "val" / "labels" / sorted(p.name for p in (root / "val" / "labels").iterdir())[0]
    original = label.read_bytes()
    with Image.open(label) as img:
        Image.fromarray(np.ascontiguousarray(np.asarray(img)[::-1])).save(label)
    capsys.readouterr()
    assert _run(env.run_args("--trials", "1")) == 2
    said = _said(capsys)
    assert "different data" in said and stored in said and "--study-name rooted-" in said
    assert "Traceback" not in said
    assert _stored_state(env, "rooted") == before

    label.write_bytes(original)  # the stored data again: the study resumes (set-up only, no training)
    assert _run(env.run_args("--trials", "0")) == 0
    assert env.study().user_attrs[DATASET_ATTR]["content_hash"] == stored

    # The same study file without data.root trains on the embedded dataset: other data, refused too.
    embedded = env.write("embedded", trials=1, epochs=1, **TINY)
    before = _stored_state(env, "rooted")
    capsys.readouterr()
    assert _run(env.run_args("--trials", "1", "--study-name", "rooted", file=embedded)) == 2
    assert "different data" in _said(capsys) and _stored_state(env, "rooted") == before

    # A study from before the `dataset` attr: the hash its MLflow parent run was tagged with decides.
    env.study().set_user_attr(DATASET_ATTR, None)
    with Image.open(label) as img:
        Image.fromarray(np.ascontiguousarray(np.asarray(img)[::-1])).save(label)
    before = _stored_state(env, "rooted")
    capsys.readouterr()
    assert _run(env.run_args("--trials", "1")) == 2
    said = _said(capsys)
    assert stored in said and f"see MLflow run {env.parent_id()}" in said and "Traceback" not in said
    assert _stored_state(env, "rooted") == before
