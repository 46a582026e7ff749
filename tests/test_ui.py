"""`python -m search.ui`: both servers on free loopback ports over a tiny real study, checked over HTTP,
stopped with SIGINT, and no process left behind; plus the refusals that start nothing.

The study is `tests.studykit`'s smallest (`TINY`); the `search.ui` subprocess helpers (`UiProcess`,
`started_ui`, `http_json`) are `tests.faultkit`'s, shared with test_browser.py and test_search_e2e.py.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.ui.launcher import main as ui_main
from tests.faultkit import (
    UI_START_DEADLINE_S,
    UiProcess,
    free_port,
    http_json,
    process_groups_alive,
    started_ui,
    ui_port_args,
)
from tests.studykit import PARENT_TAG, StudyEnv, make_tiny_study

# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyEnv]:
    with pytest.MonkeyPatch.context() as mp:
        yield make_tiny_study(tmp_path_factory.mktemp("ui"), mp)


@pytest.mark.slow
def test_ui_serves_mlflow_and_dashboard_and_stops_cleanly(tiny: StudyEnv) -> None:
    study = tiny.study()
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    trial_runs = {t.user_attrs["mlflow_run_id"] for t in study.trials}
    gen = started_ui(tiny)
    ui = next(gen)
    try:
        pgids = ui.child_pids()
        assert len(pgids) == 2, ui.output
        assert process_groups_alive(pgids), "the servers should be running"

        # MLflow: the study's experiment lists the parent run and every trial run hanging under it.
        experiment_url = ui.link("MLflow experiment")
        # ... in the training view (MLflow 3.17's UI reads its view from the link, not the experiment)
        mlflow_base, experiment_id = re.match(r"(http://[^/]+)/#/experiments/(\d+)\?workflowType=machine_learning$",
                                              experiment_url).groups()
        runs = http_json(f"{mlflow_base}/api/2.0/mlflow/runs/search",
                         {"experiment_ids": [experiment_id], "max_results": 100})["runs"]
        parents = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get(PARENT_TAG)
                   for r in runs}
        assert parents.get(parent_id, "absent") is None  # the study run itself has no parent
        assert {run for run, parent in parents.items() if parent == parent_id} == trial_runs

        # optuna-dashboard: the study and its trials, with each trial's MLflow run id in its user attrs.
        dashboard_study_url = ui.link("optuna-dashboard study")
        dash_base, study_id = re.match(r"(http://[^/]+)/dashboard/studies/(\d+)$", dashboard_study_url).groups()
        names = {s["study_name"] for s in http_json(f"{dash_base}/api/studies")["study_summaries"]}
        assert tiny.name in names
        detail = http_json(f"{dash_base}/api/studies/{study_id}")
        assert len(detail["trials"]) == len(study.trials)
        linked = [a["value"] for t in detail["trials"] for a in t["user_attrs"] if a["key"] == "mlflow_run_id"]
        assert sorted(linked) == sorted(trial_runs)

        assert ui.stop(signal.SIGINT) == 0, ui.output
        assert "stopped: MLflow UI" in ui.output
        assert process_groups_alive(pgids) == {}
    finally:
        gen.close()


@pytest.mark.slow
def test_server_dying_at_start_stops_the_other(tiny: StudyEnv, tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a SQLite database" * 100)
    ui = UiProcess(["--storage", f"sqlite:///{broken}", "--tracking-uri", tiny.tracking_uri,
                    *ui_port_args()], tmp_path)
    ui.start()
    try:
        rc = ui.proc.wait(timeout=UI_START_DEADLINE_S)
        pgids = ui.child_pids()
    finally:
        ui.cleanup()
    assert rc == 1, ui.output
    assert "optuna-dashboard exited" in ui.output and "last lines of" in ui.output
    assert len(pgids) == 2 and process_groups_alive(pgids) == {}
    assert "server logs kept in" in ui.output


def test_port_in_use_is_refused_before_starting_anything(tiny: StudyEnv, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = ui_main(["--storage", tiny.storage, "--tracking-uri", tiny.tracking_uri,
                      "--mlflow-port", str(free_port()), "--dashboard-port", str(port)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert f"port {port}" in err and "--dashboard-port" in err and "already in use" in err
    assert "started" not in out


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_non_loopback_host_needs_allow_remote(tiny: StudyEnv, capsys: pytest.CaptureFixture, host: str) -> None:
    rc = ui_main(["--storage", tiny.storage, "--tracking-uri", tiny.tracking_uri, "--host", host])
    err = capsys.readouterr().err
    assert rc == 2
    assert host in err and "--allow-remote" in err and "authentication" in err


def test_bad_stores_and_unknown_study_are_clear_errors(tiny: StudyEnv, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ports = ui_port_args()
    missing = tmp_path / "nowhere.db"
    assert ui_main(["--storage", f"sqlite:///{missing}", "--tracking-uri", tiny.tracking_uri, *ports]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists()  # looking must not create an empty store

    assert ui_main(["--storage", tiny.storage, "--tracking-uri", tiny.tracking_uri, "--study", "nope", *ports]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and tiny.name in err  # names the stored studies

    same = str(free_port())
    assert ui_main(["--storage", tiny.storage, "--tracking-uri", tiny.tracking_uri,
                    "--mlflow-port", same, "--dashboard-port", same]) == 2
    assert "two different ports" in capsys.readouterr().err
