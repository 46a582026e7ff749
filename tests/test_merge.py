"""`python -m benchmarks.merge`: pruning runs from separate processes, one result and its tables."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.merge import main

SHARED = {"study": "default", "trials": 12, "max_epochs": 9, "device": "cpu", "goal": {}, "complete": True}


def _run(seed: int, pruner: str, epochs: int, best: float) -> dict:
    return {"seed": seed, "pruner": pruner, "epochs_trained": epochs, "best_val_miou": best,
            "best_seen_val_miou": best, "wall_s": float(epochs), "complete": 1, "pruned": 0, "failed": 0}


def _write(path: Path, runs: list[dict], **overrides) -> Path:
    path.write_text(json.dumps({"command": f"python -m benchmarks ({path.name})",
                                "machine": {"torch_threads": 1, "env": {"SEG_DEVICE_DATA": "off"}},
                                "sections": {"pruning": SHARED | {"runs": runs} | overrides}}))
    return path


def test_merges_per_seed_files_and_compares_each_seed_with_its_own_baseline(tmp_path, capsys):
    a = _write(tmp_path / "s0.json", [_run(0, "none", 108, 0.50), _run(0, "sha", 36, 0.50)])
    b = _write(tmp_path / "s1.json", [_run(1, "sha", 27, 0.40), _run(1, "none", 108, 0.42)])
    out = tmp_path / "merged.json"
    assert main([str(a), str(b), "--json", str(out)]) == 0
    merged = json.loads(out.read_text())["sections"]["pruning"]
    assert [(r["seed"], r["pruner"], r["source"]) for r in merged["runs"]] == [
        (0, "none", str(a)), (0, "sha", str(a)), (1, "none", str(b)), (1, "sha", str(b))]
    sha = merged["summary"]["sha"]
    assert sha["epochs_ratio_vs_none"] == [3.0, 4.0] and sha["mean_epochs_ratio_vs_none"] == 3.5
    assert sha["miou_gap_vs_none"] == [0.0, 0.02] and sha["meets_goal"] is True  # mean 3.5x, mean gap 0.01: within 0.01
    assert [s["env"] for s in merged["sources"]] == [{"SEG_DEVICE_DATA": "off"}] * 2
    assert "| 1 | sha | 27 | 4 | 0.4 | 0.02 |" in out.with_suffix(".md").read_text()
    assert "per pruner (mean over seeds)" in capsys.readouterr().out


def test_a_pruner_setting_gets_its_own_summary_row_after_the_usual_pruners(tmp_path):
    label = "percentile:percentile=45.0,n_startup_trials=2"
    a = _write(tmp_path / "s0.json", [_run(0, label, 27, 0.50), _run(0, "none", 108, 0.50)])
    b = _write(tmp_path / "s0-sha.json", [_run(0, "sha", 36, 0.49)])
    out = tmp_path / "merged.json"
    assert main([str(a), str(b), "--json", str(out)]) == 0
    merged = json.loads(out.read_text())["sections"]["pruning"]
    assert merged["pruners"] == ["none", "sha", label]
    assert [r["pruner"] for r in merged["runs"]] == ["none", "sha", label]
    assert merged["summary"][label]["epochs_ratio_vs_none"] == [4.0] and merged["summary"][label]["meets_goal"] is True
    assert f"| {label} | 27 | 4 |" in out.with_suffix(".md").read_text()


def test_refuses_a_seed_and_pruner_measured_twice(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [_run(0, "none", 108, 0.5)])
    b = _write(tmp_path / "b.json", [_run(0, "none", 108, 0.5)])
    assert main([str(a), str(b), "--json", str(tmp_path / "m.json")]) == 2
    assert f"{b}: seed 0 pruner 'none' is also in {a}" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_refuses_different_study_sizes_naming_both_files(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [_run(0, "none", 108, 0.5)])
    b = _write(tmp_path / "b.json", [_run(1, "none", 90, 0.5)], trials=10)
    assert main([str(a), str(b), "--json", str(tmp_path / "m.json")]) == 2
    assert f"{b}: trials=10, but {a} has 12" in capsys.readouterr().err


def test_refuses_a_file_without_pruning_runs(tmp_path, capsys):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"sections": {"speed": {}}}))
    assert main([str(bad), "--json", str(tmp_path / "m.json")]) == 2
    assert f"{bad}: no pruning runs" in capsys.readouterr().err
