"""Start the MLflow UI and optuna-dashboard together, on loopback, and stop both on Ctrl-C.

    python -m search.ui                                  # MLflow on :5000, optuna-dashboard on :8080
    python -m search.ui --study default                  # also print that study's direct links
    python -m search.ui --mlflow-port 5001 --dashboard-port 8081
    python -m search.ui --storage sqlite:///other.db --tracking-uri sqlite:///other/mlflow.db

Both servers run as child processes, each in its own process group, with their output in log files
(printed at start). The launcher waits until both answer over HTTP, prints their URLs, and then
waits. Ctrl-C or SIGTERM stops both (terminate, then kill after a timeout) and exits 0; a server
that dies is reported with the tail of its log, the other one is stopped, and the exit code is 1.
Bad input (a port in use, a missing storage, an unknown study, a non-loopback host without
--allow-remote) exits 2 before anything is started.

Neither server has authentication: binding to anything but loopback needs --allow-remote.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from search.settings import configure_process
from search.study.confirm_record import confirmed_text, read_record
from search.study.lookup import StudyNotFoundError, load_named_study, storage_must_exist, study_id
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, RUN_ID_ATTR, artifact_root_for, ui_url
from search.ui.servers import Server, ServerFailed, start, stop_all, supervise, wait_ready

LOOPBACK = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT_S = 90.0  # MLflow needs ~15 s on a busy 2-core box; leave room


class UsageError(Exception):
    """Bad input: exit 2 before anything is started."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM: stop both servers and exit 0."""


@dataclass(frozen=True)
class UiSettings:
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    mlflow_port: int = 5000
    dashboard_port: int = 8080
    host: str = "127.0.0.1"
    allow_remote: bool = False
    study: str | None = None  # the study's name in the storage
    start_timeout: float = START_TIMEOUT_S


def parse_args(argv: list[str] | None) -> UiSettings:
    p = argparse.ArgumentParser(prog="python -m search.ui", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking URI (the UI's backend store)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="port of the MLflow UI")
    p.add_argument("--dashboard-port", type=int, default=8080, help="port of optuna-dashboard")
    p.add_argument("--host", default="127.0.0.1", help="interface both servers bind to")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (neither server has authentication)")
    p.add_argument("--study", help="a study name: print direct links to its MLflow experiment and dashboard page")
    p.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, help="seconds to wait for both servers")
    return UiSettings(**vars(p.parse_args(argv)))


# --------------------------------------------------------------------------- checks before starting


def check_host(host: str, allow_remote: bool) -> None:
    if host in LOOPBACK:
        return
    if not allow_remote:
        raise UsageError(f"--host {host} would expose both servers beyond this machine, and neither has "
                         f"authentication; use one of {', '.join(LOOPBACK)}, or add --allow-remote if you mean it")
    print(f"WARNING: binding to {host}: anyone who can reach this machine can read and change your "
          "experiments and studies (neither the MLflow UI nor optuna-dashboard has authentication)", file=sys.stderr)


def check_port_free(host: str, port: int, flag: str) -> None:
    """Bind-test the port the way the servers will (SO_REUSEADDR: TIME_WAIT leftovers are fine)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"{flag} {port}: expected a port number between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UsageError(f"port {port} on {host} is already in use ({err.strerror}); "
                             f"stop whatever uses it or choose another port with {flag} N") from None


def check_ports(args: UiSettings) -> None:
    if args.mlflow_port == args.dashboard_port:
        raise UsageError(f"--mlflow-port and --dashboard-port are both {args.mlflow_port}; "
                         "expected two different ports")
    check_port_free(args.host, args.mlflow_port, "--mlflow-port")
    check_port_free(args.host, args.dashboard_port, "--dashboard-port")


def check_stores(args: UiSettings) -> None:
    """Both stores must already exist: a typo must not start a UI on a fresh, empty store."""
    if args.tracking_uri.startswith(("http://", "https://")):
        raise UsageError(f"--tracking-uri {args.tracking_uri} is already an MLflow server: open it in a browser; "
                         "this command serves a database store (e.g. sqlite:///mlruns/mlflow.db)")
    try:
        storage_must_exist(args.storage)
        storage_must_exist(args.tracking_uri)
    except StudyNotFoundError as err:
        raise UsageError(str(err)) from None


# --------------------------------------------------------------------------- server definitions


def url_host(host: str) -> str:
    """The host as written in a URL; a wildcard bind is reached through loopback."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def mlflow_server(args: UiSettings, log_dir: Path) -> Server:
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.tracking_uri,
            "--host", args.host, "--port", str(args.mlflow_port), "--workers", "1"]
    artifacts = artifact_root_for(args.tracking_uri)
    if artifacts:  # runs keep file:// artifact URIs beside the DB; the server's proxy points there too
        argv += ["--artifacts-destination", artifacts]
    return Server("MLflow UI", "--mlflow-port", args.mlflow_port, argv,
                  f"http://{url_host(args.host)}:{args.mlflow_port}", "/health", log_dir / "mlflow.log")


def dashboard_executable() -> str:
    """The `optuna-dashboard` script of this interpreter's environment (it has no `python -m` entry)."""
    found = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if not found:
        raise UsageError("optuna-dashboard is not installed in this environment: "
                         "pip install -c constraints.txt -e . (it is a dependency)")
    return found


def dashboard_server(args: UiSettings, log_dir: Path) -> Server:
    argv = [dashboard_executable(), args.storage, "--host", args.host, "--port", str(args.dashboard_port)]
    return Server("optuna-dashboard", "--dashboard-port", args.dashboard_port, argv,
                  f"http://{url_host(args.host)}:{args.dashboard_port}", "/api/meta", log_dir / "optuna-dashboard.log")


# --------------------------------------------------------------------------- process handling


def _request_stop(signum: int, frame: Any) -> None:
    raise StopRequested(signal.Signals(signum).name)


# --------------------------------------------------------------------------- links


def study_links(name: str, args: UiSettings, mlflow_url: str, dashboard_url: str) -> list[str]:
    """Direct links for one study: its dashboard page, MLflow experiment, best run and registered model."""
    from mlflow.tracking import MlflowClient  # only needed with --study; keeps plain start-up light

    try:
        study = load_named_study(name, args.storage)
    except StudyNotFoundError as err:
        raise UsageError(str(err)) from None
    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise UsageError(f"no MLflow experiment named {name!r} in {args.tracking_uri}; experiments: {known}")
    links = [f"optuna-dashboard study  {dashboard_url}/dashboard/studies/{study_id(name, args.storage)}",
             f"MLflow experiment       {ui_url(mlflow_url, exp.experiment_id)}"]
    best = _best_run_id(study)
    if best:
        links.append(f"MLflow best trial run   {ui_url(mlflow_url, exp.experiment_id, best)}  "
                     f"(search val mIoU {study.best_value:.4f})")
    champion = (read_record(study) or {}).get("champion")
    if champion:  # the search value stays next to the confirmed one
        links.append(f"MLflow confirmed run    {ui_url(mlflow_url, exp.experiment_id, champion['run_id'])}  "
                     f"({confirmed_text(read_record(study))})")
    if client.search_registered_models(f"name = '{name}'"):
        links.append(f"registered model        {mlflow_url}/#/models/{quote(name)}")
    return links


def _best_run_id(study: Any) -> str | None:
    try:
        return study.best_trial.user_attrs.get(RUN_ID_ATTR)
    except ValueError:  # no complete trial yet
        return None


# --------------------------------------------------------------------------- main


def prepare(args: UiSettings, log_dir: Path) -> tuple[list[Server], list[str]]:
    """Every check that needs no server: host, ports, stores, the study's links."""
    check_host(args.host, args.allow_remote)
    check_ports(args)
    check_stores(args)
    servers = [mlflow_server(args, log_dir), dashboard_server(args, log_dir)]
    links = study_links(args.study, args, servers[0].base_url, servers[1].base_url) if args.study else []
    return servers, links


def announce(servers: list[Server], links: list[str]) -> None:
    mlflow, dashboard = servers
    print(f"\nMLflow UI          {mlflow.base_url}")
    print(f"optuna-dashboard   {dashboard.base_url}/dashboard")
    for line in links:
        print(f"  {line}")
    print("Both are running; press Ctrl-C to stop them.", flush=True)


def run(args: UiSettings, log_dir: Path) -> int:
    servers, links = prepare(args, log_dir)
    try:
        for server in servers:
            start(server)
        wait_ready(servers, args.start_timeout)
        announce(servers, links)
        supervise(servers)
    except StopRequested as why:
        print(f"\n{why}: stopping both servers", flush=True)
        return 0
    except ServerFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not interrupt the clean-up half-way and leave a server behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        started = [s for s in servers if s.proc is not None]
        stop_all(started)
        if started:
            print("stopped: " + ", ".join(f"{s.name} (pid {s.proc.pid})" for s in started), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process()
    log_dir = Path(tempfile.mkdtemp(prefix="search-ui-"))
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    rc = 2
    try:
        rc = run(args, log_dir)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
    except StopRequested:  # Ctrl-C before any server was started
        rc = 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if rc == 0 or not any(log_dir.iterdir()):
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"server logs kept in {log_dir}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
