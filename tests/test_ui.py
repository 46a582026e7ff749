"""`python -m search.ui`: both servers on free loopback ports over a tiny real study, checked over HTTP,
stopped with SIGINT, and no process left behind; plus the refusals that start nothing.

The helpers `TinyStudy` and `UiProcess` are shared with test_browser.py, test_report.py and
test_registry.py (imported from here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest

from search.run import main as run_main
from search.ui.launcher import main as ui_main

REPO = Path(__file__).resolve().parent.parent
READY_LINE = "press Ctrl-C to stop them"
START_DEADLINE_S = 150.0  # both servers on a busy 2-core box; a deadline, not a timing assertion

TINY_TOML = """
[study]
name = "{name}"
metric = "val_miou"
direction = "maximize"

[data]
num_classes = 10
synth_train = 8
synth_val = 4

[budget]
trials = {trials}
max_epochs = {epochs}

[sampler]
name = "random"

[pruner]
name = "none"

[space.model]
depth = 2
base_channels = 4
max_channels = 8

[space.train]
optimizer = "adam"
lr = {{ low = 2e-3, high = 2e-2, log = true }}
batch_size = 8

[space.transforms]
crop_size = 32
"""


@dataclass
class TinyStudy:
    """A tiny real study (depth-2 UNet, 8 + 4 procedural images) in SQLite storages under `root`."""

    root: Path
    name: str = "tiny"

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.root}/optuna.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root}/mlruns/mlflow.db"

    @property
    def study_file(self) -> Path:
        return self.root / f"{self.name}.toml"

    def run(self, trials: int = 2, epochs: int = 1, *extra: str) -> int:
        """Run (or resume) the study through `search.run.main`, as a user would."""
        self.study_file.write_text(TINY_TOML.format(name=self.name, trials=trials, epochs=epochs))
        sigterm = signal.getsignal(signal.SIGTERM)  # search.run installs its own handler
        try:
            return run_main(["--study", str(self.study_file), "--storage", self.storage, "--tracking-uri",
                             self.tracking_uri, "--device", "cpu", "--trials", str(trials), "--epochs", str(epochs),
                             *extra])
        finally:
            signal.signal(signal.SIGTERM, sigterm)

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)


def make_tiny_study(root: Path, monkeypatch: pytest.MonkeyPatch, trials: int = 2, epochs: int = 1) -> TinyStudy:
    monkeypatch.setenv("SEG_CACHE_DIR", str(root / "cache"))
    tiny = TinyStudy(root)
    assert tiny.run(trials, epochs) == 0
    return tiny


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_groups_alive(pgids: set[int]) -> dict[int, str]:
    """Live (non-zombie) processes whose process group is in `pgids`: pid -> command line."""
    alive = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) in pgids and state != "Z":
            alive[int(entry.name)] = cmd
    return alive


@dataclass
class UiProcess:
    """`python -m search.ui` as a subprocess; its output is collected by a reader thread."""

    args: list[str]
    tmp: Path  # TMPDIR of search.ui: the server logs it keeps after a failure stay in the test's folder
    proc: subprocess.Popen | None = None
    lines: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "search.ui", *self.args], cwd=REPO, text=True,
                                     env={**os.environ, "TMPDIR": str(self.tmp)}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, deadline_s: float = START_DEADLINE_S) -> None:
        end = time.monotonic() + deadline_s
        while READY_LINE not in self.output:
            assert self.proc.poll() is None, f"search.ui exited with {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < end, f"search.ui not ready after {deadline_s} s:\n{self.output}"
            time.sleep(0.3)

    def child_pids(self) -> set[int]:
        return {int(p) for p in re.findall(r"started .*?: pid (\d+)", self.output)}

    def link(self, label: str) -> str:
        match = re.search(rf"{label}\s+(http://\S+)", self.output)
        assert match, f"no {label!r} link in:\n{self.output}"
        return match.group(1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        """At teardown (or after a failed test): stop it the user's way, and never leave a server behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pgid in self.child_pids():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def started_ui(tiny: TinyStudy, *extra: str) -> Iterator[UiProcess]:
    """Generator for fixtures: a ready search.ui on free ports over `tiny`; always cleaned up."""
    ui = UiProcess(["--storage", tiny.storage, "--tracking-uri", tiny.tracking_uri, "--mlflow-port", str(free_port()),
                    "--dashboard-port", str(free_port()), "--study", tiny.name, *extra], tiny.root)
    ui.start()
    try:
        ui.wait_ready()
        yield ui
    finally:
        ui.cleanup()


def http_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200, url
        return json.loads(resp.read())


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyStudy]:
    with pytest.MonkeyPatch.context() as mp:
        yield make_tiny_study(tmp_path_factory.mktemp("ui"), mp)


@pytest.mark.slow
def test_ui_serves_mlflow_and_dashboard_and_stops_cleanly(tiny: TinyStudy) -> None:
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
        mlflow_base, experiment_id = re.match(r"(http://[^/]+)/#/experiments/(\d+)$", experiment_url).groups()
        runs = http_json(f"{mlflow_base}/api/2.0/mlflow/runs/search",
                         {"experiment_ids": [experiment_id], "max_results": 100})["runs"]
        parents = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("mlflow.parentRunId")
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
def test_server_dying_at_start_stops_the_other(tiny: TinyStudy, tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a SQLite database" * 100)
    ui = UiProcess(["--storage", f"sqlite:///{broken}", "--tracking-uri", tiny.tracking_uri,
                    "--mlflow-port", str(free_port()), "--dashboard-port", str(free_port())], tmp_path)
    ui.start()
    try:
        rc = ui.proc.wait(timeout=START_DEADLINE_S)
        pgids = ui.child_pids()
    finally:
        ui.cleanup()
    assert rc == 1, ui.output
    assert "optuna-dashboard exited" in ui.output and "last lines of" in ui.output
    assert len(pgids) == 2 and process_groups_alive(pgids) == {}
    assert "server logs kept in" in ui.output


def test_port_in_use_is_refused_before_starting_anything(tiny: TinyStudy, capsys: pytest.CaptureFixture) -> None:
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
def test_non_loopback_host_needs_allow_remote(tiny: TinyStudy, capsys: pytest.CaptureFixture, host: str) -> None:
    rc = ui_main(["--storage", tiny.storage, "--tracking-uri", tiny.tracking_uri, "--host", host])
    err = capsys.readouterr().err
    assert rc == 2
    assert host in err and "--allow-remote" in err and "authentication" in err


def test_bad_stores_and_unknown_study_are_clear_errors(tiny: TinyStudy, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ports = ["--mlflow-port", str(free_port()), "--dashboard-port", str(free_port())]
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
