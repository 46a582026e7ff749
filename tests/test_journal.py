"""A damaged Optuna journal file: a torn last line is repaired under the lock (its bytes kept), other
damage is refused with an error that names the file and lines, and `search.journal --repair` fixes it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.study.journal import JournalDamagedError, check_journal
from search.study.journal import main as journal_main
from search.study.storage import open_storage
from tests.studykit import StudyEnv


def _journal_with_trials(path: Path, n: int = 3) -> None:
    study = optuna.create_study(study_name="j", storage=open_storage(str(path)))
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
                                                  value=float(i)))


def _load(path: Path) -> optuna.Study:
    return optuna.load_study(study_name="j", storage=open_storage(str(path)))


def test_torn_last_line_is_repaired_and_its_bytes_kept(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path)
    torn = b'{"op_code": 6, "worker_id": "x", "trial_id": 2, "us'
    with path.open("ab") as f:
        f.write(torn)
    with pytest.warns(UserWarning, match="last line was torn") as record:
        study = _load(path)
    assert len(study.trials) == 3, "no complete record lost"
    saved = list(tmp_path.glob("optuna.journal.torn-*"))
    assert len(saved) == 1 and saved[0].read_bytes() == torn and str(saved[0]) in str(record[0].message)
    study.optimize(lambda t: t.suggest_float("x", 0, 10), n_trials=1)  # the journal keeps working
    assert len(_load(path).trials) == 4


def test_garbage_line_is_refused_with_file_and_line_then_repaired(tmp_path: Path, capsys) -> None:
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path)
    lines = path.read_bytes().split(b"\n")
    lines.insert(2, b"\x00\x00garbage written by a broken disk")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalDamagedError, match=r"optuna\.journal is damaged: line\(s\) 3 ") as err:
        _load(path)
    assert "python -m search.study.journal" in str(err.value) and "--repair" in str(err.value)

    assert journal_main([str(path)]) == 2  # check only
    assert journal_main([str(path), "--repair"]) == 0
    assert "dropped 1 damaged line" in capsys.readouterr().out
    backups = list(tmp_path.glob("optuna.journal.backup-*"))
    assert len(backups) == 1 and b"garbage" in backups[0].read_bytes()
    assert len(_load(path).trials) >= 2


def test_search_run_reports_a_damaged_journal_clearly(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "optuna.journal"
    path.write_bytes(b'{"op_code": 0, "worker_id": "w", "study_name": "x", "directions": [1]}\nnot json\n{}\n')
    rc = StudyEnv(tmp_path, "s", storage=str(path)).run()
    assert rc == 2
    err = capsys.readouterr().err
    assert str(path) in err.replace("\n", "") and "line(s) 2" in err


def test_sound_journal_passes_untouched(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path)
    before = path.read_bytes()
    check_journal(path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.torn-*"))
