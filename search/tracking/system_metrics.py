"""System metrics for a trial's run: MLflow's own `SystemMetricsMonitor` on the run's id.

The monitor samples CPU, memory, disk and network (psutil) and, where NVML answers, each GPU's
utilisation and memory (nvidia-ml-py), and logs them as `system/*` metrics on its own thread, so
the run page's *System metrics* tab has its charts. It is started with the run and stopped before
the run ends, however the trial ends; a tracking store that has stopped answering is not waited for.
"""

from __future__ import annotations

import logging
import threading
import time

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

# A sample (psutil, NVML) plus MLflow's get_run and log_batch take ~10 ms of CPU on the 2-core
# benchmark machine: 0.5 % of training at 2 s, ~0.2 % at 5 s (docs/performance.md), which still
# draws a 16-epoch trial of the default study with a point every 5 s.
DEFAULT_INTERVAL_S = 5.0


def quiet_monitor_logs() -> None:
    """MLflow logs every monitor's start and stop at INFO: keep that out of the live table."""
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class TimedMonitor(SystemMetricsMonitor):
    """MLflow's monitor, which also keeps the CPU seconds its sampling thread used (the trial's
    `timing` records them: the monitor's cost, free of the noise of wall-clock comparisons)."""

    cpu_s: float = 0.0

    def monitor(self) -> None:
        try:
            super().monitor()
            if self._shutdown_event.is_set() and self._logging_step == 0:
                self._log_one_sample()
        finally:
            self.cpu_s = time.thread_time()

    def _log_one_sample(self) -> None:
        # MLflow logs only after a whole sampling interval: a run stopped sooner (a trial pruned
        # after its first short epoch, a tiny test study) would have an empty System metrics tab.
        # One sample at the stop gives it a point; the store may be gone by then, which is no error.
        try:
            self.collect_metrics()
            self.publish_metrics(self.aggregate_metrics())
        except Exception as err:  # noqa: BLE001 - the monitor must never fail the trial
            logging.getLogger(__name__).debug("last system metrics sample not logged: %s", err)


def start_monitor(tracking_uri: str, run_id: str, interval_s: float) -> TimedMonitor | None:
    """A running monitor for `run_id`, or None when `interval_s` is 0 (system metrics off)."""
    if interval_s <= 0:
        return None
    monitor = TimedMonitor(run_id, sampling_interval=interval_s, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def stop_monitor(monitor: TimedMonitor | None, store_alive: bool = True) -> float:
    """Stop sampling and log what is left; returns the CPU seconds the sampling thread used. With the
    store gone, the monitor's last calls may hang in MLflow's retries: they finish on a daemon
    thread instead of holding the trial up (and the seconds are not known: 0)."""
    if monitor is None:
        return 0.0
    if not store_alive:
        threading.Thread(target=monitor.finish, name="stop-system-metrics", daemon=True).start()
        return 0.0
    monitor.finish()
    return monitor.cpu_s
