"""`python -m search.report`: one self-contained HTML with every section and its images embedded,
logged to the study's parent MLflow run; checked on a tiny real study."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from search.report.study_report import main as report_main
from tests.studykit import TINY, StudyEnv

SECTIONS = ("leaderboard", "history", "pruning", "importances", "parallel", "per-class", "overlays", "fingerprint")
WITH_IMAGES = ("history", "pruning", "importances", "parallel", "per-class", "overlays")
DATA_IMG = re.compile(r'<img [^>]*src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"')


def section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.DOTALL)
    assert match, f"no section {anchor!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyEnv]:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(root / "cache"))
        tiny = StudyEnv(root, "tiny", trials=3, epochs=2, **TINY)
        assert tiny.run() == 0
        yield tiny


@pytest.fixture(scope="module")
def report(study: StudyEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("out") / "nested" / "tiny.html"
    rc = report_main(study.read_args("--out", str(out)))
    return out, rc


def test_report_has_every_section_with_embedded_images(study: StudyEnv, report: tuple[Path, int]) -> None:
    out, rc = report
    assert rc == 0 and out.is_file()
    html = out.read_text()
    for anchor in SECTIONS:
        section(html, anchor)
    for anchor in WITH_IMAGES:
        images = DATA_IMG.findall(section(html, anchor))
        assert images, f"section {anchor!r} has no embedded image"
        for _fmt, payload in images:
            img = Image.open(io.BytesIO(base64.b64decode(payload)))
            img.load()  # a real, complete image
            assert img.width > 1 and img.height > 1
    assert len(DATA_IMG.findall(section(html, "overlays"))) >= 4 * 4  # 4 images x (image, truth, prediction, overlay)


def test_report_loads_nothing_from_outside(report: tuple[Path, int]) -> None:
    html = report[0].read_text()
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs
    outside = [r for r in refs if not r.startswith(("data:", "#"))]
    assert outside == []
    assert "<script" not in html and "<link" not in html and "url(" not in html and "@import" not in html


def test_leaderboard_and_best_trial_content(study: StudyEnv, report: tuple[Path, int]) -> None:
    html = report[0].read_text()
    s = study.study()
    board = section(html, "leaderboard")
    rows = re.findall(r"<tr[^>]*><td class=\"num\">(\d+)</td><td>(\w+)</td><td class=\"num\">([^<]*)</td>"
                      r"<td class=\"num\">(\d+)</td><td>([^<]*)</td>", board)
    assert sorted(int(r[0]) for r in rows) == [t.number for t in s.trials]
    best = s.best_trial
    number, state, value, epochs, params = rows[0]  # best first
    assert int(number) == best.number and state == "COMPLETE" and value == f"{best.value:.4f}"
    assert int(epochs) == best.user_attrs["epochs_trained"]
    assert "train.lr=" in params
    assert best.user_attrs["mlflow_run_id"] in board
    per_class = section(html, "per-class")
    assert f"Trial {best.number}" in per_class and "square-grid" in per_class  # class names from the run
    assert study.study().user_attrs["mlflow_parent_run_id"] in html


def test_fingerprint_matches_the_parent_run(study: StudyEnv, report: tuple[Path, int]) -> None:
    fp = section(report[0].read_text(), "fingerprint")
    parent = MlflowClient(study.tracking_uri).get_run(study.study().user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["dataset_hash"] in fp
    assert "8 / 4" in fp  # train / val image counts of the tiny dataset


def test_report_is_logged_to_the_parent_run(study: StudyEnv, report: tuple[Path, int], tmp_path: Path) -> None:
    out, _ = report
    client = MlflowClient(study.tracking_uri)
    parent = study.study().user_attrs["mlflow_parent_run_id"]
    files = {f.path: f.file_size for f in client.list_artifacts(parent, "report")}
    assert files == {"report/study_report.html": out.stat().st_size}
    local = client.download_artifacts(parent, "report/study_report.html", str(tmp_path))
    assert Path(local).read_bytes() == out.read_bytes()


def test_one_complete_trial_gets_notes_instead_of_importances(study: StudyEnv, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(study.root / "cache"))
    one = StudyEnv(study.root, "one", trials=1, epochs=1, **TINY)
    assert one.run() == 0
    out = tmp_path / "one.html"
    assert report_main(one.read_args("--out", str(out), "--no-log")) == 0
    html = out.read_text()
    assert "need at least 2 complete trials" in section(html, "importances")
    assert not DATA_IMG.findall(section(html, "importances"))
    assert DATA_IMG.findall(section(html, "overlays"))  # the single trial is still the best one
    parent = one.study().user_attrs["mlflow_parent_run_id"]
    assert MlflowClient(one.tracking_uri).list_artifacts(parent, "report") == []  # --no-log


def test_unknown_study_is_a_clear_error(study: StudyEnv, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.html"
    assert report_main(study.read_args("--out", str(out), name="nope")) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "tiny" in err
    assert not out.exists()
