"""(slow) The study's champion served by MLflow's own scoring server.

A tiny study registers its best trial as `models:/tiny@champion`; then the real
`mlflow models serve -m models:/tiny@champion --env-manager local`, started from this venv on a free
127.0.0.1 port with `MLFLOW_TRACKING_URI` set to the study's SQLite store, answers `/invocations`
for one odd-sized uint8 image with a (1, H, W) label map. The server is stopped afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from search.registry import champion_uri
from tests.faultkit import cli_env, free_port, http_json, kill_group, wait_for
from tests.studykit import make_tiny_study

SERVE_DEADLINE_S = 180.0  # loading torch and the model on a busy 2-core box; a deadline, not a timing assertion


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_a_label_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = make_tiny_study(tmp_path, monkeypatch, trials=1)
    port, log = free_port(), tmp_path / "serve.log"
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", champion_uri(tiny.name), "--env-manager",
            "local", "--host", "127.0.0.1", "--port", str(port)]
    env = cli_env(tmp_path / "cache", MLFLOW_TRACKING_URI=tiny.tracking_uri)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _pings(url) or proc.poll() is not None, SERVE_DEADLINE_S, f"mlflow models serve on {url}",
                 poll=0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        image = np.random.default_rng(0).integers(0, 256, (1, 29, 41, 3), dtype=np.uint8)
        answer = http_json(f"{url}/invocations", {"inputs": image.tolist()})
        labels = np.asarray(answer["predictions"])
        assert labels.shape == (1, 29, 41), answer
        assert labels.min() >= 0 and labels.max() < 10
    finally:
        kill_group(proc)
    assert proc.poll() is not None
