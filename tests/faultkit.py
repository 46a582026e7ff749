"""Helpers for the multi-process and fault-injection tests: tiny study files, CLI subprocesses,
and real servers (PostgreSQL, MLflow) on 127.0.0.1 that are always stopped afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from search.study.storage import open_storage

REPO = Path(__file__).resolve().parent.parent
STATUS_FOR_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
PARENT_TAG = "mlflow.parentRunId"


def study_toml(name: str, epochs: int = 2, pruner: str = "none", sampler: str = "random", trials: int = 4,
               extra: str = "") -> str:
    """A tiny study: depth-2 UNet (4 -> 16 channels) on 16 + 6 procedural images, 32 px crops."""
    return f"""
[study]
name = "{name}"

[data]
num_classes = 10
synth_train = 16
synth_val = 6

[budget]
trials = {trials}
max_epochs = {epochs}

[sampler]
name = "{sampler}"

[pruner]
name = "{pruner}"
{extra}

[space.model]
depth = 2
base_channels = 4
max_channels = 16
upsample = {{ choices = ["bilinear", "transpose"] }}

[space.train]
optimizer = {{ choices = ["adam", "sgd"] }}
lr = {{ low = 1e-3, high = 1e-2, log = true }}
momentum = {{ low = 0.8, high = 0.95 }}
batch_size = 8

[space.transforms]
crop_size = 32
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SEG_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_run(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m search.run ARGS` in the background, output to `log`."""
    out = log.open("ab")
    # A shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and Python then keeps it
    # ignored: reset it so Ctrl-C tests behave the same wherever the suite runs.
    return subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=REPO, env=env, stdout=out,
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
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
