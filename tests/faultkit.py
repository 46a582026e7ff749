"""Helpers for the multi-process, server and fault-injection tests: CLI subprocesses (`search.run`,
`search.ui`) and real servers (PostgreSQL, MLflow) on 127.0.0.1 that are always stopped afterwards.
The tiny study files and their storages are `tests.studykit`'s."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from search.study.storage import open_storage
from tests.studykit import PARENT_TAG, STATUS_FOR_STATE, StudyEnv

REPO = Path(__file__).resolve().parent.parent
UI_READY_LINE = "press Ctrl-C to stop them"
UI_START_DEADLINE_S = 150.0  # both servers on a busy 2-core box; a deadline, not a timing assertion


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports: each socket stays bound until all are chosen (ports picked
    one at a time can repeat once the first socket is closed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ui_port_args() -> list[str]:
    """`--mlflow-port A --dashboard-port B` with two distinct free ports."""
    mlflow, dashboard = free_ports(2)
    return ["--mlflow-port", str(mlflow), "--dashboard-port", str(dashboard)]


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SEG_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_run(args: list[str], env: dict[str, str], log: Path, module: str = "search.run") -> subprocess.Popen:
    """`python -m search.run ARGS` (or another module's CLI) in the background, output to `log`."""
    out = log.open("ab")
    # A shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and Python then keeps it
    # ignored: reset it so Ctrl-C tests behave the same wherever the suite runs.
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=out,
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def running_trial_with_progress(storage: str, study_name: str) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial that has reported at least one epoch (so it is truly mid-training)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.intermediate_values and t.user_attrs.get("mlflow_run_id"):
            return t
    return None


def all_runs(tracking_uri: str, study_name: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study_name)
    assert exp is not None, f"no MLflow experiment {study_name!r} at {tracking_uri}"
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=5000)


def assert_consistent(storage: str, tracking_uri: str, study_name: str, expected_counted: int) -> optuna.Study:
    """The multi-process invariants: trial count, unique numbers, one run per attempt, states agree."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = [t for t in trials if not (t.state == optuna.trial.TrialState.FAIL and t.number in retried)]
    assert len(counted) == expected_counted, [(t.number, t.state.name) for t in trials]
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state.name) for t in trials]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == max(numbers) + 1
    runs = all_runs(tracking_uri, study_name)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    parent = study.user_attrs["mlflow_parent_run_id"]
    children = {r.info.run_id: r for r in runs if r.data.tags.get(PARENT_TAG) == parent}
    assert len(children) == len(runs) - 1, "every run but the study's own hangs under the study run"
    run_ids = [t.user_attrs.get("mlflow_run_id") for t in trials]
    assert None not in run_ids and len(set(run_ids)) == len(trials) == len(children), "one MLflow run per attempt"
    for t in trials:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial_number"] == str(t.number)
        expected = "KILLED" if t.number in retried or t.user_attrs.get("fail_reason") == "interrupted" \
            else STATUS_FOR_STATE[t.state.name]
        assert run.info.status == expected, (t.number, t.state.name, run.info.status)
    return study


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    return found


def postgres_available() -> bool:
    return _pg_bin("initdb") is not None and _pg_bin("pg_ctl") is not None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (Debian's package); yields its URL."""
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-U", "optuna", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off"
    subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([*as_user, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "optuna", "study"],
                       check=True, capture_output=True)
        yield f"postgresql://optuna@127.0.0.1:{port}/study"
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def create_database(storage: str, name: str) -> str:
    """A new, empty database `name` on the PostgreSQL server of the URL `storage`; returns its URL."""
    import psycopg

    with psycopg.connect(storage, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{storage.rsplit('/', 1)[0]}/{name}"


@contextmanager
def mlflow_server(root: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mlflow server` (SQLite backend, proxied artifacts) on 127.0.0.1; yields (URL, process)."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = (root / f"server-{port}.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or proc.poll() is not None, 90, f"mlflow server on {url}", poll=0.5)
        assert proc.poll() is None, (root / f"server-{port}.log").read_text()[-2000:]
        yield url, proc
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, with all its worker processes."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # let the group's other processes (uvicorn) go too
    proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- search.ui as a subprocess


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

    def wait_ready(self, deadline_s: float = UI_START_DEADLINE_S) -> None:
        end = time.monotonic() + deadline_s
        while UI_READY_LINE not in self.output:
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


def started_ui(env: StudyEnv, *extra: str, name: str | None = None) -> Iterator[UiProcess]:
    """Generator for fixtures: a ready `search.ui --study NAME` on free ports over `env`'s storages;
    always cleaned up."""
    ui = UiProcess(env.read_args(*ui_port_args(), *extra, name=name), env.root)
    ui.start()
    try:
        ui.wait_ready()
        yield ui
    finally:
        ui.cleanup()


def http_json(url: str, body: dict | None = None) -> dict:
    """GET (or POST `body` to) a JSON API; the answer must be 200."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200, url
        return json.loads(resp.read())
