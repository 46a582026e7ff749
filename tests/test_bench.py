"""`python -m benchmarks --tiny`: one run of every section, checked through its JSON.

The tiny run trains real (tiny) models, runs real Optuna studies with real MLflow logging in temp
sqlite storages, and starts real worker subprocesses; the test checks that every field is there,
that figures are present wherever a variant ran, that nulls come with a reason, and that the
counts agree with the run's own settings. It asserts no timings.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from benchmarks.bench_cli import main
from benchmarks.bench_settings import SECTIONS, TINY_MODEL
from seg.config import ModelConfig
from seg.model import forward_flops

PRUNERS = ("none", "sha", "hyperband", "median")
TRIALS, EPOCHS = 2, 2
SECTION_FIELDS = {
    "overhead": ("bare_fit_s_median", "trial_s_median", "overhead_wall_ratio", "overhead_harness_fraction",
                 "artifacts_fraction", "goal", "meets_goal", "repeats", "config", "epochs", "variants",
                 "system_metrics_interval_s", "system_metrics_wall_cost",
                 "system_metrics_cpu_cost"),
    "pipeline": ("cpu_loader_images_per_s", "device_loader_images_per_s", "device_loader_runs_on",
                 "train_step_images_per_s", "cpu_loader_over_step_ratio", "device_loader_over_step_ratio",
                 "fit_epoch_data_placement", "fit_epoch_placement_reason", "fit_epoch_images_per_s",
                 "fit_epoch_data_wait_fraction", "goal", "meets_goal"),
    "speed": ("device", "model", "params", "image_size", "batch", "timed_steps", "train_gflop_per_image",
              "peak_flops", "variants"),
    "fixed_cost": ("process_start_s", "data_load_s", "model_build_s", "loaders_build_s", "min_rung_trial_s",
                   "per_trial_fixed_s", "per_process_fixed_s", "per_trial_fraction",
                   "per_trial_fraction_if_one_process_per_trial", "goal", "meets_goal"),
    "concurrency": ("device", "steps_per_trial", "runs"),
    "pruning": ("study", "trials", "max_epochs", "seeds", "pruners", "runs", "summary", "goal", "complete"),
}
# It starts worker subprocesses (concurrency, fresh-process start-up): a multi-process test.
pytestmark = pytest.mark.slow
VARIANT_FIELDS = ("images_per_s", "achieved_tflops", "fraction_of_peak", "speedup_vs_fp32", "skip_reason", "ran_on")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    root = tmp_path_factory.mktemp("bench")
    out = root / "bench.json"
    sigterm = signal.getsignal(signal.SIGTERM)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(root / "cache"))
        try:
            rc = main(["--tiny", "--device", "cpu", "--json", str(out)])
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    return rc, json.loads(out.read_text())


def test_runs_every_section_and_records_the_machine_and_command(bench):
    rc, res = bench
    assert rc == 0 and res["tiny"] is True
    assert res["command"] == f"python -m benchmarks --tiny --device cpu --json {res['command'].split()[-1]}"
    assert set(res["sections"]) == set(SECTIONS)
    assert not any(s.get("skipped") for s in res["sections"].values())
    for key in ("cpu", "cpu_cores", "torch_threads", "gpu", "torch", "optuna", "mlflow", "env"):
        assert key in res["machine"]
    assert res["machine"]["gpu"] is None and res["machine"]["cuda_available"] is False


@pytest.mark.parametrize("section", SECTIONS)
def test_section_has_every_field(bench, section):
    data = bench[1]["sections"][section]
    missing = [f for f in SECTION_FIELDS[section] if f not in data]
    assert not missing, f"{section} lacks {missing}"
    nulls = [f for f in SECTION_FIELDS[section] if data[f] is None]
    assert not nulls, f"{section}: {nulls} are null though the section ran"
    assert data["tables"], f"{section} printed no table"


def test_overhead_trial_timing_is_consistent(bench):
    data = bench[1]["sections"]["overhead"]
    (pair,) = data["repeats"]
    assert pair["bare_fit_s"] > 0 and set(data["variants"]) == {"off", "on"}  # system metrics off and on
    for variant in ("off", "on"):
        trial = pair[variant]
        assert trial["trial_training_s"] > 0 and trial["trial_harness_s"] >= 0
        assert trial["trial_total_s"] >= trial["trial_training_s"] + trial["trial_artifacts_s"]
    assert pair["off"]["trial_system_metrics_cpu_s"] == 0 < pair["on"]["trial_system_metrics_cpu_s"]
    assert data["config"]["model.base_channels"] == TINY_MODEL["base_channels"]


def test_speed_variants_have_figures_or_a_reason(bench):
    data = bench[1]["sections"]["speed"]
    assert list(data["variants"]) == ["fp32", "bf16 AMP", "bf16 AMP + channels_last",
                                      "bf16 AMP + channels_last + compile"]
    for name, row in data["variants"].items():
        assert set(VARIANT_FIELDS) <= set(row), name
        if row["skip_reason"] is None:
            assert row["images_per_s"] > 0 and row["achieved_tflops"] > 0 and row["fraction_of_peak"] > 0, name
        else:
            assert row["images_per_s"] is None and row["fraction_of_peak"] is None, name
    assert data["variants"]["fp32"]["skip_reason"] is None and data["variants"]["fp32"]["speedup_vs_fp32"] == 1.0
    assert "compile" in data["variants"]["bf16 AMP + channels_last + compile"]["skip_reason"]
    # FLOPs come from the model itself: 3x its forward pass at the benchmark's size.
    size = data["image_size"]
    assert data["train_gflop_per_image"] == round(3 * forward_flops(ModelConfig(**TINY_MODEL), size, size) / 1e9, 3)
    assert data["peak_flops"]["fp32"] > 0 and "measured" in data["peak_flops"]["source"]


def test_fixed_cost_compile_is_null_with_a_reason_on_cpu(bench):
    data = bench[1]["sections"]["fixed_cost"]
    assert data["compile_warmup_cold_s"] is None and data["compile_warmup_reused_s"] is None
    assert "CUDA" in data["compile_skip_reason"]
    assert data["per_trial_fixed_s"] == pytest.approx(data["model_build_s"] + data["loaders_build_s"], abs=1e-3)


def test_concurrency_runs_one_and_two_trials(bench):
    runs = bench[1]["sections"]["concurrency"]["runs"]
    assert [r["trials"] for r in runs] == [1, 2]
    for r in runs:
        assert len(r["per_trial_images_per_s"]) == r["trials"] and r["total_images_per_s"] > 0
        assert r["images"] == r["trials"] * bench[1]["sections"]["concurrency"]["steps_per_trial"] * 4  # batch 4
    assert runs[0]["total_vs_one_trial"] == 1.0


def test_pruning_counts_agree_with_the_study(bench):
    data = bench[1]["sections"]["pruning"]
    assert data["complete"] and data["trials"] == TRIALS and data["max_epochs"] == EPOCHS
    assert [(r["seed"], r["pruner"]) for r in data["runs"]] == [(0, p) for p in PRUNERS]
    for r in data["runs"]:
        assert r["trials"] == TRIALS and r["complete"] + r["pruned"] + r["failed"] == TRIALS
        assert TRIALS <= r["epochs_trained"] <= TRIALS * EPOCHS
        assert r["best_val_miou"] is not None and r["best_seen_val_miou"] >= r["best_val_miou"]
        # The curves are the epochs: one value per epoch trained, one curve per trial.
        assert [c["number"] for c in r["curves"]] == list(range(TRIALS))
        assert sum(len(c["values"]) for c in r["curves"]) == r["epochs_trained"]
    none = next(r for r in data["runs"] if r["pruner"] == "none")
    assert none["epochs_trained"] == TRIALS * EPOCHS and none["pruned"] == 0  # no pruner trains every epoch
    assert max(max(c["values"]) for c in none["curves"]) == none["best_val_miou"]
    assert data["summary"]["none"]["mean_epochs_ratio_vs_none"] == 1.0
    assert data["summary"]["none"]["mean_miou_gap_vs_none"] == 0.0
    for pruner in PRUNERS[1:]:
        row = data["summary"][pruner]
        assert row["mean_epochs_ratio_vs_none"] == round(none["epochs_trained"] / row["mean_epochs_trained"], 4)
        assert isinstance(row["meets_goal"], bool)


def test_bad_sizes_are_refused_with_the_flag_named(capsys):
    assert main(["--tiny", "--pruning-trials", "0", "--json", "unused.json"]) == 2
    assert "--pruning-trials=0; expected an integer >= 1" in capsys.readouterr().err
    assert not Path("unused.json").exists()


def test_a_pruner_setting_reaches_the_study_and_labels_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # threshold:lower=0.99 prunes every trial after its first epoch; the bare name (lower=0.0) never would.
    label = "threshold:lower=0.99"
    out = tmp_path / "pruning.json"
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--tiny", "--device", "cpu", "--only", "pruning", "--pruners", "none", label,
                     "--json", str(out)]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    data = json.loads(out.read_text())["sections"]["pruning"]
    assert data["pruners"] == ["none", label]
    run = next(r for r in data["runs"] if r["pruner"] == label)
    assert run["pruned"] == TRIALS and run["epochs_trained"] == TRIALS
    assert data["summary"][label]["mean_epochs_ratio_vs_none"] == EPOCHS


def test_a_bad_pruner_setting_is_refused_before_any_run(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--tiny", "--pruners", "none", "median:n_startup=3", "--json", "unused.json"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # the setting as typed, then the keys the pruner takes and the unknown one
    assert ("'median:n_startup=3': pruner 'median' takes ['n_min_trials', 'n_startup_trials', 'n_warmup_steps'], "
            "not ['n_startup']") in err
    assert not Path("unused.json").exists()
