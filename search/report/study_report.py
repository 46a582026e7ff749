"""Write one self-contained HTML report of a study and log it to the study's MLflow run.

    python -m search.report --study default                       # -> default-report.html
    python -m search.report --study default --out reports/default.html
    python -m search.report --study seed --data /path/to/data      # a folder dataset that moved

Sections: leaderboard (trial, state, val mIoU, epochs, params), the confirmation of the top trials
with fresh seeds (search value next to the confirmed mean ± sd), optimisation history, pruning curves,
param importances, parallel coordinates, the best trial's per-class IoU and confusion matrix, its
test-set figures when `search.evaluate` scored it (or the confirmed champion), its predictions on
validation images next to the ground truth, and the dataset fingerprint. Every
image is embedded as a `data:` URI; the page loads nothing from anywhere. The same file is logged
to the study's parent MLflow run as `report/study_report.html` (unless --no-log).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.registry import best_complete_trial
from search.report.best_trial import overlay_section, per_class_section
from search.report.confirm_section import confirm_section
from search.report.dataset_section import fingerprint_section
from search.report.evaluation_section import evaluation_section
from search.report.html import Section, key_values, page
from search.report.leaderboard import leaderboard_section
from search.report.study_sections import history_section, importance_section, parallel_section, pruning_section
from search.settings import configure_process
from search.study.confirm_record import confirmed_text, read_record
from search.study.lookup import StudyNotFoundError, load_named_study
from search.study.storage import DEFAULT_STORAGE
from search.tracking.client import DEFAULT_TRACKING_URI, PARENT_RUN_ATTR
from seg.config import Config
from seg.loaders import class_names

REPORT_ARTIFACT_DIR = "report"
REPORT_ARTIFACT_NAME = "study_report.html"


@dataclass(frozen=True)
class ReportSettings:
    study: str
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    out: Path | None = None
    data: str | None = None
    device: str = "cpu"
    no_log: bool = False


def parse_args(argv: list[str] | None) -> ReportSettings:
    p = argparse.ArgumentParser(prog="python -m search.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", required=True, help="study name in the Optuna storage")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL or journal file path")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking URI")
    p.add_argument("--out", type=Path, help="output HTML file (default: STUDY-report.html)")
    p.add_argument("--data", help="dataset folder, if the study's folder dataset is no longer where it was")
    p.add_argument("--device", default="cpu", help="device for the best trial's predictions")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the study's MLflow run")
    return ReportSettings(**vars(p.parse_args(argv)))


def study_class_names(trial: optuna.trial.FrozenTrial | None) -> list[str] | None:
    if trial is None or "config" not in trial.user_attrs:
        return None
    return list(class_names(Config.from_dict(trial.user_attrs["config"]).data))


def header(study: optuna.Study, best: optuna.trial.FrozenTrial | None, parent: str | None, args: ReportSettings) -> str:
    counts = {s.name: 0 for s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                  optuna.trial.TrialState.FAIL)}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best_text = f"trial {best.number}: val mIoU {best.value:.4f}" if best else "no complete trial yet"
    confirmed = confirmed_text(read_record(study)) or "not confirmed (python -m search.confirm)"
    return key_values([
        ("study", study.study_name), ("direction", study.direction.name.lower()),
        ("trials", ", ".join(f"{n} {s.lower()}" for s, n in counts.items())), ("best (search)", best_text),
        ("champion (confirmed)", confirmed),
        ("MLflow study run", parent or "-"), ("Optuna storage", args.storage), ("MLflow tracking", args.tracking_uri),
        ("generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ])


def build_sections(study: optuna.Study, best: optuna.trial.FrozenTrial | None, parent: str | None,
                   client: MlflowClient, args: ReportSettings, tmp: Path) -> list[Section]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # matplotlib/optuna layout chatter
        return [
            leaderboard_section(study),
            confirm_section(study),
            history_section(study),
            pruning_section(study),
            importance_section(study),
            parallel_section(study),
            per_class_section(client, best, tmp / "confusion"),
            evaluation_section(client, study, best, study_class_names(best)),
            overlay_section(best, args.tracking_uri, args.data, tmp / "checkpoint", args.device),
            fingerprint_section(client, parent, study_class_names(best), tmp / "fingerprint"),
        ]


def log_report(client: MlflowClient, parent: str, report: Path) -> str:
    """Log under the fixed artifact name, whatever the local file is called."""
    with tempfile.TemporaryDirectory(prefix="report-log-") as tmp:
        staged = Path(tmp) / REPORT_ARTIFACT_NAME
        shutil.copyfile(report, staged)
        client.log_artifact(parent, str(staged), REPORT_ARTIFACT_DIR)
    return f"{REPORT_ARTIFACT_DIR}/{REPORT_ARTIFACT_NAME}"


def write_report(args: ReportSettings) -> tuple[Path, str | None]:
    """Build and write the HTML; returns its path and the study's parent run id (None if it has none)."""
    study = load_named_study(args.study, args.storage)
    client = MlflowClient(args.tracking_uri)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    best = best_complete_trial(study)
    out = args.out or Path(f"{study.study_name}-report.html")
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        sections = build_sections(study, best, parent, client, args, Path(tmp))
    html = page(f"Study report: {study.study_name}", header(study, best, parent, args), sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out, parent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        out, parent = write_report(args)
    except (StudyNotFoundError, MlflowException, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    if args.no_log:
        return 0
    if not parent:
        print(f"warning: study {args.study!r} has no {PARENT_RUN_ATTR} user attr; the report was not logged to MLflow",
              file=sys.stderr)
        return 0
    try:
        artifact = log_report(MlflowClient(args.tracking_uri), parent, out)
    except (MlflowException, OSError) as err:
        print(f"error: the report is written to {out}, but logging it to MLflow run {parent} failed: {err}",
              file=sys.stderr)
        return 1
    print(f"logged to the study's MLflow run {parent} as {artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
