"""End to end in a real headless browser: `search.ui` over a tiny real study, then Debian's `chromium`
loads the MLflow UI's page of a trial run and optuna-dashboard's study page, renders them (both are
single-page apps), and saves screenshots that must not be blank; at the end SIGTERM stops both servers and nothing
is left. Skipped when chromium is absent
(`apt-get install chromium`); CI installs it."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.faultkit import UiProcess, process_groups_alive, started_ui
from tests.studykit import StudyEnv, make_tiny_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1400,900", "--virtual-time-budget=15000", "--hide-scrollbars"]
BROWSER_DEADLINE_S = 120  # a guard against a hung browser, not a timing assertion

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # A private profile dir per call: no state shared with other runs or a user's browser.
    return subprocess.run([CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={cwd / 'profile'}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=BROWSER_DEADLINE_S, check=False)


def screenshot(url: str, path: Path) -> Image.Image:
    result = chromium(f"--screenshot={path}", url, cwd=path.parent)
    assert path.is_file() and path.stat().st_size > 0, result.stderr[-2000:]
    return Image.open(path).convert("RGB")


def rendered_dom(url: str, cwd: Path) -> str:
    return chromium("--dump-dom", url, cwd=cwd).stdout


def assert_not_blank(img: Image.Image) -> None:
    assert img.size == (1400, 900)
    colours = img.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50, "the page rendered as (nearly) one colour"
    dominant = max(count for count, _ in colours)
    assert dominant < 0.95 * img.width * img.height, "the page is almost empty"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyEnv]:
    with pytest.MonkeyPatch.context() as mp:
        yield make_tiny_study(tmp_path_factory.mktemp("browser"), mp)


@pytest.fixture(scope="module")
def ui(tiny: StudyEnv) -> Iterator[UiProcess]:
    gen = started_ui(tiny)
    ui = next(gen)
    try:
        yield ui
        # SIGTERM (test_ui.py covers Ctrl-C): both servers stop, exit 0, nothing left.
        pgids = ui.child_pids()
        assert ui.stop(signal.SIGTERM) == 0, ui.output
        assert process_groups_alive(pgids) == {}
    finally:
        gen.close()


def test_mlflow_run_page_renders_the_trial(tiny: StudyEnv, ui: UiProcess, tmp_path: Path) -> None:
    best = tiny.study().best_trial
    url = f"{ui.link('MLflow experiment')}/runs/{best.user_attrs['mlflow_run_id']}"
    assert_not_blank(screenshot(url, tmp_path / "mlflow-run.png"))
    dom = rendered_dom(url, tmp_path)
    assert f"trial-{best.number:03d}-complete" in dom  # the run name, rendered by the single-page app
    assert f"study-{tiny.name}" in dom  # its parent (study) run is linked


def test_dashboard_study_page_renders(tiny: StudyEnv, ui: UiProcess, tmp_path: Path) -> None:
    url = ui.link("optuna-dashboard study")
    assert_not_blank(screenshot(url, tmp_path / "optuna-dashboard.png"))
    dom = rendered_dom(url, tmp_path)
    assert tiny.name in dom and "History" in dom
