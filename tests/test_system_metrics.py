"""MLflow's system metrics monitor on a trial run, against a real SQLite tracking store."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from search.tracking.system_metrics import start_monitor, stop_monitor


def test_a_run_stopped_before_one_interval_still_gets_one_sample(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("m", artifact_location=(tmp_path / "mlruns").as_uri())
    run_id = client.create_run(exp).info.run_id
    monitor = start_monitor(uri, run_id, interval_s=60.0)  # far longer than this run lives
    assert stop_monitor(monitor) >= 0.0
    client.set_terminated(run_id)
    cpu = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(cpu) == 1 and cpu[0].step == 0
    assert "system/system_memory_usage_percentage" in client.get_run(run_id).data.metrics


def test_no_monitor_when_system_metrics_are_off(tmp_path: Path) -> None:
    assert start_monitor(f"sqlite:///{tmp_path / 'mlflow.db'}", "any", interval_s=0) is None
    assert stop_monitor(None) == 0.0
    assert mlflow.active_run() is None
