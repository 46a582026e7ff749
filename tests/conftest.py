"""Shared test settings."""

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
