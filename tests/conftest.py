"""Shared test settings."""

import re

import pytest
import torch

from search.settings import configure_process

# What every entry point does first: MLflow's bounded retries, a headless matplotlib.
configure_process()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny tensors on a 2-core CI box: one intra-op thread avoids OpenMP spin/wake overhead
    # (measured: the e2e study takes 24 s with 1 thread against 66 s with 2).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a GPU: skipped here with the reason, run by scripts/gpu-check on one."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU by scripts/gpu-check)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def plan_datasets(tmp_path_factory):
    """The planner's five generated datasets (tests/plankit.py), written once per test session."""
    from tests.plankit import write_plan_datasets

    return write_plan_datasets(tmp_path_factory.mktemp("plan-datasets"))


@pytest.fixture(scope="session")
def _shared_servers(tmp_path_factory):
    """One PostgreSQL cluster and one real `mlflow server` for the session's multi-process tests (an
    mlflow server takes 10-20 s to start on a 2-core box); stopped at the end of the session."""
    from tests.faultkit import mlflow_server, postgres_server

    with postgres_server() as storage, mlflow_server(tmp_path_factory.mktemp("shared-tracking")) as (uri, _):
        yield storage, uri


@pytest.fixture
def pg_and_tracking(_shared_servers, request):
    """(PostgreSQL URL, tracking server URL) for one test: a database of its own, created empty, on the
    shared cluster, and the shared tracking server (each test names its own study, hence experiment)."""
    from tests.faultkit import create_database

    storage, uri = _shared_servers
    return create_database(storage, re.sub(r"\W+", "_", request.node.name).lower()[:60]), uri
