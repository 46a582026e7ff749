"""The search harness: Optuna studies over `seg` configs, tracked in MLflow."""

import os

# Quiet, bounded MLflow defaults for every entry point (the user's environment wins): no progress
# bars in logs, no telemetry, and a dead or slow tracking server fails a call in seconds instead of
# MLflow's default ~4-20 minutes of retries.
for _key, _value in {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}.items():
    os.environ.setdefault(_key, _value)
