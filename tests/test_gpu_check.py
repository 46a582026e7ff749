"""scripts/gpu-check's own logic on the CPU: the plan it prints, and the figures it derives from a
benchmark JSON and a real (tiny) study. The GPU run itself happens on a device machine."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.studykit import make_tiny_study

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-check"


@pytest.fixture(scope="module")
def gpu_check():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file runs
    loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_dry_run_prints_every_step_with_its_limit_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--dry-run"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert [s.split(" (")[0] for s in steps] == ["1. install", "2. cuda tests", "3. benchmark", "4. plan",
                                                 "5. search", "6. predict", "7. evaluate"]
    assert "-m pytest -m cuda" in steps[1] and f"--junitxml={out}/cuda-tests.xml" in steps[1]
    # Only the modules holding cuda tests are collected: one needing a package the GPU machine lacks
    # must not stop the run, and every cuda-marked test must be among them.
    files = steps[1].split("cuda-tests.xml ")[1].split()
    marked = sorted(str(f.relative_to(REPO)) for f in (REPO / "tests").glob("test_*.py")
                    if f.name != Path(__file__).name and "pytest.mark.cuda" in f.read_text())
    assert sorted(files) == marked
    assert "-m benchmarks --skip pruning --device cuda" in steps[2]
    assert "search.plan --device cuda" in steps[3]
    assert "--trials 12 --epochs 6 --device cuda" in steps[4] and "models:/default@champion" in steps[5]
    assert "search.evaluate --study default" in steps[6] and "--device cuda" in steps[6]
    total = int(lines[-1].split(": ")[1].split()[0])
    assert total <= 8 * 60 + 30, "the whole check must fit one device command with room for a rerun"
    assert not out.exists(), "a dry run writes nothing"


def test_bench_figures_give_the_goals_and_the_hundred_epoch_estimate(gpu_check, tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    variants = {"fp32": 400.0, "bf16 AMP": 800.0, gpu_check.EAGER: 1500.0, gpu_check.COMPILED: 2250.0}
    path.write_text(json.dumps({"sections": {
        "speed": {"variants": {n: {"images_per_s": v, "fraction_of_peak": v / 9000} for n, v in variants.items()}},
        "pipeline": {"fit_epoch_data_wait_fraction": 0.02},
        "overhead": {"overhead_harness_fraction": 0.004},
        "concurrency": {"runs": [{"trials": 1, "total_images_per_s": 900.0},
                                 {"trials": 2, "total_images_per_s": 1500.0}]},
    }}))
    figures = gpu_check.bench_figures(path)
    # 4,500 images x 100 epochs at the faster of eager and compiled (2,250 images/s): 200 s.
    assert figures["hundred_epochs_minutes"] == round(4500 * 100 / 2250 / 60, 2) == 3.33
    assert figures["hundred_epochs_speedup_vs_report"] == round(184 / (4500 * 100 / 2250 / 60), 1)
    assert figures["data_wait_fraction"] == 0.02 and figures["concurrency"] == {1: 900.0, 2: 1500.0}
    page = gpu_check.summary_markdown([gpu_check.Outcome("benchmark", "passed", 12.0)], {"bench": figures})
    assert "| benchmark | passed | 12.0 |" in page and "| 1500.0 | ≥ 1200 |" in page and "3.33" in page
    assert gpu_check.bench_figures(tmp_path / "missing.json") == {}


def test_unmeasured_figures_say_so(gpu_check) -> None:
    page = gpu_check.summary_markdown([gpu_check.Outcome("benchmark", "timed out after 160 s", 160.0)], {})
    assert "timed out after 160 s" in page
    assert page.count("not measured") >= 8, "no figure may be filled in without a measurement"


def test_search_figures_read_the_study_back(gpu_check, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_tiny_study(tmp_path, monkeypatch, trials=2, epochs=1)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # The script reads `default` from scratch/optuna.db: copy the tiny study there under that name.
    import optuna

    optuna.copy_study(from_study_name=env.name, from_storage=env.storage, to_storage=f"sqlite:///{scratch}/optuna.db",
                      to_study_name="default")
    figures = gpu_check.search_figures(scratch, 42.0)
    study = env.study()
    assert figures["wall_s"] == 42.0 and figures["trials"] == 2 and figures["complete"] == 2
    assert figures["best_val_miou"] == round(study.best_value, 4)
    timing = [t.user_attrs["timing"] for t in study.trials]
    harness, training = sum(t["harness_s"] for t in timing), sum(t["training_s"] for t in timing)
    assert figures["harness_fraction"] == round(harness / training, 5) > 0
