"""End to end in a real headless browser: `search.ui` over a tiny real study, then Debian's `chromium`
loads the MLflow UI's experiment page (which must open on the runs table, the *Model training*
view, not the GenAI one), a trial run's page and its *System metrics* tab, and optuna-dashboard's
study page, renders them (all are single-page apps), and saves screenshots that must not be blank;
at the end SIGTERM stops both servers and nothing is left. Skipped when chromium is absent
(`apt-get install chromium`); CI installs it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from search.tracking.client import ui_url
from tests.faultkit import UiProcess, process_groups_alive, started_ui
from tests.studykit import StudyEnv, make_tiny_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1400,900", "--virtual-time-budget=15000", "--hide-scrollbars"]
BROWSER_DEADLINE_S = 120  # a guard against a hung browser, not a timing assertion
GENAI_OVERVIEW = "Detect Issues"  # what MLflow's GenAI view of an experiment offers first

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
        # System metrics every 0.2 s: a trial of about a second has a chart to draw.
        yield make_tiny_study(tmp_path_factory.mktemp("browser"), mp, run_args=("--system-metrics-interval", "0.2"))


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


def run_page(ui: UiProcess, tiny: StudyEnv, tab: str = "") -> str:
    """The best trial run's page (or one of its tabs) as `search.ui` links it: in the training view."""
    experiment = ui.link("MLflow experiment")
    base, experiment_id = re.match(r"(http://[^/]+)/#/experiments/(\d+)\?", experiment).groups()
    return ui_url(base, experiment_id, tiny.study().best_trial.user_attrs["mlflow_run_id"], tab)


def test_mlflow_experiment_opens_on_the_runs_table(tiny: StudyEnv, ui: UiProcess, tmp_path: Path) -> None:
    url = ui.link("MLflow experiment")
    assert_not_blank(screenshot(url, tmp_path / "mlflow-experiment.png"))
    dom = rendered_dom(url, tmp_path)
    assert f"study-{tiny.name}" in dom  # the runs table lists the study's run ...
    assert GENAI_OVERVIEW not in dom  # ... instead of the GenAI traces overview
    # The same page without the link's view: what MLflow 3.17 shows a browser that never chose one.
    assert GENAI_OVERVIEW in rendered_dom(url.split("?")[0], tmp_path)


def test_mlflow_run_page_renders_the_trial(tiny: StudyEnv, ui: UiProcess, tmp_path: Path) -> None:
    best = tiny.study().best_trial
    url = run_page(ui, tiny)
    assert_not_blank(screenshot(url, tmp_path / "mlflow-run.png"))
    dom = rendered_dom(url, tmp_path)
    assert f"trial-{best.number:03d}-complete" in dom  # the run name, rendered by the single-page app
    assert f"study-{tiny.name}" in dom  # its parent (study) run is linked
    assert "embedded/train" in dom and "embedded/val" in dom  # Datasets used
    assert "Logged models (1)" in dom  # the trial's LoggedModel


def test_mlflow_system_metrics_tab_has_charts(tiny: StudyEnv, ui: UiProcess, tmp_path: Path) -> None:
    run_id = tiny.study().best_trial.user_attrs["mlflow_run_id"]
    assert tiny.client.get_metric_history(run_id, "system/cpu_utilization_percentage")  # the data is there
    url = run_page(ui, tiny, "system-metrics")
    assert_not_blank(screenshot(url, tmp_path / "mlflow-system-metrics.png"))
    # The tab fetches each chart's history after the page has loaded; on a loaded 2-core machine
    # the first dump can come before those answers, so a second load is allowed.
    assert any("cpu_utilization_percentage" in rendered_dom(url, tmp_path) for _ in range(2))


def test_dashboard_study_page_renders(tiny: StudyEnv, ui: UiProcess, tmp_path: Path) -> None:
    url = ui.link("optuna-dashboard study")
    assert_not_blank(screenshot(url, tmp_path / "optuna-dashboard.png"))
    dom = rendered_dom(url, tmp_path)
    assert tiny.name in dom and "History" in dom
