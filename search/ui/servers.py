"""Child servers (mlflow server, optuna-dashboard) in their own process groups: start, wait until
they answer over HTTP, watch, and stop them with everything they spawned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STOP_TIMEOUT_S = 10.0
POLL_S = 0.5
LOG_TAIL_LINES = 25
# The MLflow server otherwise spawns a job runner with several huey consumer processes for GenAI
# jobs this project never uses: they cost memory and CPU on a small box (the user's setting wins).
CHILD_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}


class ServerFailed(Exception):
    """A server died or never became ready; the message carries its log tail."""


@dataclass
class Server:
    name: str
    flag: str  # the option that sets its port, for messages
    port: int
    argv: list[str]
    base_url: str
    ready_path: str
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)


def start(server: Server) -> None:
    """Start the server in its own process group (so stopping it reaches its workers too)."""
    env = {**CHILD_ENV_DEFAULTS, **os.environ}
    with open(server.log_path, "wb") as log:
        server.proc = subprocess.Popen(server.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
    print(f"started {server.name}: pid {server.proc.pid}, log {server.log_path}", flush=True)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):  # not listening yet, or still booting
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def died_message(server: Server) -> str:
    return (f"{server.name} exited with code {server.proc.returncode}; last lines of {server.log_path}:\n"
            f"{log_tail(server.log_path)}")


def wait_ready(servers: list[Server], timeout: float) -> None:
    """Poll each server's ready URL until all answer 200, or one dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        for server in list(pending):
            if server.proc.poll() is not None:
                raise ServerFailed(died_message(server))
            if http_ok(server.base_url + server.ready_path):
                pending.remove(server)
        if pending and time.monotonic() > deadline:
            names = ", ".join(s.name for s in pending)
            raise ServerFailed(f"{names} did not answer within {timeout:.0f} s; last lines of "
                               + "; ".join(f"{s.log_path}:\n{log_tail(s.log_path)}" for s in pending))
        if pending:
            time.sleep(POLL_S)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member exists but is not ours to signal: still alive
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # already gone
        pass


def stop(server: Server, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group, wait for all of it, SIGKILL what is left after `timeout`."""
    if server.proc is None:
        return
    pgid = server.proc.pid  # start_new_session: the leader's pid is the group id
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.proc.poll()  # reap the leader so it does not linger as a zombie group member
        if server.proc.returncode is not None and not group_alive(pgid):
            return
        time.sleep(0.1)
    print(f"{server.name} did not stop within {timeout:.0f} s: killing it", file=sys.stderr)
    signal_group(pgid, signal.SIGKILL)
    server.proc.wait()


def stop_all(servers: list[Server]) -> None:
    for server in servers:
        stop(server)


def supervise(servers: list[Server]) -> None:
    """Wait until a stop is requested (StopRequested) or a server dies (ServerFailed)."""
    while True:
        for server in servers:
            if server.proc.poll() is not None:
                raise ServerFailed(died_message(server))
        time.sleep(POLL_S)
