"""deploy/slurm/search.sbatch on a real single-node SLURM cluster (Debian's slurm-wlm and munge, started
here on 127.0.0.1 and stopped afterwards), with a real PostgreSQL study and a real `mlflow server`.

An array of 3 tasks shares a tiny study and holds exactly its trials; then the task of a second
array is cancelled (`scancel`) mid-trial: its trial is FAIL, its run KILLED, and a resubmission
retries it with the same params. Asserted through Optuna's and MLflow's own clients. The bad-input
checks (no storage URL, an unreachable database) run the script directly, without SLURM.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from tests.faultkit import (
    REPO,
    all_runs,
    assert_consistent,
    cli_env,
    free_ports,
    postgres_available,
    running_trial_with_progress,
    wait_for,
)
from tests.studykit import TINY, StudyEnv

SBATCH = REPO / "deploy" / "slurm" / "search.sbatch"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "flock")
SLURM_MISSING = [d for d in DAEMONS if not (shutil.which(d) or Path(f"/usr/sbin/{d}").exists())]
FAIL = optuna.trial.TrialState.FAIL


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@contextmanager
def slurm_cluster() -> Iterator[dict[str, str]]:
    """munged, slurmctld and slurmd in a temp dir: one node (this host on 127.0.0.1) of 2 CPUs and no
    GPUs. Yields the environment the SLURM client commands need (SLURM_CONF); stops all three."""
    base = Path(tempfile.mkdtemp(prefix="slurm-"))
    munge, conf = base / "munge", base / "slurm.conf"
    for d in (munge, base / "state", base / "spool"):
        d.mkdir(mode=0o700)
    subprocess.run([_bin("mungekey"), "--create", "--keyfile", str(munge / "key")], check=True, capture_output=True)
    ctld_port, node_port = free_ports(2)
    host, user = socket.gethostname(), pwd.getpwuid(os.geteuid()).pw_name
    conf.write_text("\n".join([
        "ClusterName=ci", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmUser={user}", f"SlurmdUser={user}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge}/socket",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={node_port}", f"StateSaveLocation={base}/state",
        f"SlurmdSpoolDir={base}/spool", f"SlurmctldPidFile={base}/slurmctld.pid", f"SlurmdPidFile={base}/slurmd.pid",
        f"SlurmctldLogFile={base}/slurmctld.log", f"SlurmdLogFile={base}/slurmd.log",
        # What runs in a plain container: no cgroup tracking or task binding.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "SchedulerType=sched/builtin", "ReturnToService=2", "MpiDefault=none",
        "KillWait=20",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        "PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = [subprocess.Popen([_bin("munged"), "--foreground", "--force", f"--socket={munge}/socket",
                               f"--key-file={munge}/key", f"--pid-file={munge}/pid", f"--log-file={munge}/log",
                               f"--seed-file={munge}/seed"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    try:
        wait_for(lambda: (munge / "socket").exists(), 30, "munged's socket")
        procs.append(subprocess.Popen([_bin("slurmctld"), "-D", "-c", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([_bin("slurmd"), "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        wait_for(lambda: _sinfo_idle(env) or any(p.poll() is not None for p in procs), 60, "an idle SLURM node")
        assert all(p.poll() is None for p in procs), _logs(base)
        yield env
    finally:
        if len(procs) == 3:  # a failed test: no task outlives the cluster (KillWait: SIGKILL 20 s after SIGTERM)
            subprocess.run(["scancel", "--user", user], env=env, capture_output=True)
            try:
                wait_for(lambda: not _any_job(env), 40, "the cancelled jobs to end", poll=1)
            except AssertionError:
                pass
        for proc in reversed(procs):  # slurmd, slurmctld, then munged
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _any_job(env: dict[str, str]) -> bool:
    return bool(subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip())


def _sinfo_idle(env: dict[str, str]) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
    return out.strip() == "idle"


def _logs(base: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(base.glob("*.log")))


def submit(env: dict[str, str], logs: Path, array: str, *args: str) -> str:
    """`sbatch --array=ARRAY search.sbatch ARGS` without GPUs; returns the job id."""
    out = subprocess.run(["sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", f"--array={array}",
                          f"--output={logs}/%A_%a.log", str(SBATCH), *args], cwd=logs, env=env,
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split(";")[0]


def queued(env: dict[str, str], job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], env=env, capture_output=True, text=True)
    return bool(out.stdout.strip())


def wait_done(env: dict[str, str], job: str, logs: Path, timeout: float = 300) -> None:
    try:
        wait_for(lambda: not queued(env, job), timeout, f"SLURM job {job} to leave the queue", poll=1)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{_task_logs(logs)}") from None


def _task_logs(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.glob("*.log")))


@pytest.mark.slow
@pytest.mark.skipif(bool(SLURM_MISSING), reason=f"SLURM (Debian's slurm-wlm and munge) is not installed: "
                                                 f"{', '.join(SLURM_MISSING)} missing; .ci/run installs them")
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (Debian's postgresql package) is not installed")
def test_array_shares_a_study_and_a_cancelled_task_is_retried(tmp_path: Path, pg_and_tracking) -> None:
    logs, locks = tmp_path / "logs", tmp_path / "locks"
    logs.mkdir()
    storage, uri = pg_and_tracking  # a fresh database; the session's tracking server
    started = time.monotonic()
    with slurm_cluster() as slurm_env:
        slurm_up = time.monotonic() - started
        study = StudyEnv(tmp_path, "slurm", storage=storage, tracking_uri=uri, epochs=1, **TINY)
        env = cli_env(tmp_path / "cache", **slurm_env, UNET_SEARCH_STORAGE=storage, UNET_SEARCH_TRACKING_URI=uri,
                      UNET_SEARCH_DEVICE="cpu", UNET_SEARCH_LOCK_DIR=str(locks), UNET_SEARCH_PYTHON=sys.executable)
        # 1. Three tasks on a study that does not exist yet: one creates it, all share it, 3 trials exactly.
        t0 = time.monotonic()
        job = submit(env, logs, "0-2", "--study", str(study.file), "--total-trials", "3")
        wait_done(env, job, logs)
        first_array = time.monotonic() - t0
        optuna_study = assert_consistent(storage, uri, "slurm", 3)
        assert len(optuna_study.trials) == 3 and all(t.state.is_finished() for t in optuna_study.trials)
        assert "creating it" in _task_logs(logs), "one task created the study"

        # 2. One more task with long trials (100 epochs of a fraction of a second): cancel it mid-trial.
        t0 = time.monotonic()
        job = submit(env, logs, "3", "--study", str(study.file), "--total-trials", "4", "--epochs", "100")
        victim = wait_for(lambda: running_trial_with_progress(storage, "slurm") or not queued(env, job), 240,
                          "a trial in mid-training")
        assert isinstance(victim, optuna.trial.FrozenTrial), "the task ended before its trial:\n" + _task_logs(logs)
        subprocess.run(["scancel", f"{job}_3"], env=env, check=True)
        wait_done(env, job, logs)
        victim = study.study().trials[victim.number]
        assert victim.state == FAIL and victim.user_attrs["fail_reason"] == "interrupted", _task_logs(logs)
        assert study.trial_run(victim).info.status == "KILLED"
        assert all(t.state.is_finished() for t in study.study().trials)
        assert not [r for r in all_runs(uri, "slurm") if r.info.status == "RUNNING"]

        # 3. Resubmitted (shorter trials): the interrupted trial is retried with the same params, once.
        job = submit(env, logs, "4", "--study", str(study.file), "--total-trials", "4", "--epochs", "1")
        wait_done(env, job, logs)
        cancel_and_retry = time.monotonic() - t0
        final = assert_consistent(storage, uri, "slurm", 4)
        (retry,) = [t for t in final.trials if t.user_attrs.get("retry_of") == victim.number]
        assert retry.params == victim.params and retry.state.is_finished()
        assert len(final.trials) == 5, [(t.number, t.state.name) for t in final.trials]
    print(f"\n[figure] SLURM: cluster up in {slurm_up:.1f}s; 3-task array "
          f"{first_array:.1f}s; cancel + resubmission {cancel_and_retry:.1f}s")


# --------------------------------------------------------------------------- bad input, without SLURM


def _sbatch_alone(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script as a task would run it, but straight from bash (SLURM's variables set by hand)."""
    run_env = {k: v for k, v in cli_env(tmp_path / "cache").items() if not k.startswith("UNET_SEARCH_")}
    run_env.update(SLURM_ARRAY_TASK_ID="0", SLURM_SUBMIT_DIR=str(tmp_path), UNET_SEARCH_DEVICE="cpu",
                   UNET_SEARCH_PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SBATCH), *args], cwd=tmp_path, env=run_env, capture_output=True, text=True,
                          timeout=120)


def test_sbatch_without_a_storage_url_stops_at_once(tmp_path: Path) -> None:
    done = _sbatch_alone(tmp_path, "--total-trials", "3", UNET_SEARCH_TRACKING_URI="http://127.0.0.1:1")
    assert done.returncode == 2
    assert "no storage URL" in done.stderr and "UNET_SEARCH_STORAGE" in done.stderr and "Traceback" not in done.stderr


def test_sbatch_refuses_a_sqlite_storage(tmp_path: Path) -> None:
    done = _sbatch_alone(tmp_path, UNET_SEARCH_STORAGE=f"sqlite:///{tmp_path}/x.db",
                         UNET_SEARCH_TRACKING_URI="http://127.0.0.1:1")
    assert done.returncode == 2 and "cannot be shared" in done.stderr and not (tmp_path / "x.db").exists()


def test_sbatch_with_an_unreachable_database_stops_with_a_clear_message(tmp_path: Path) -> None:
    port = free_ports(1)[0]  # nothing listens there
    study = StudyEnv(tmp_path, "down", **TINY)
    start = time.monotonic()
    done = _sbatch_alone(tmp_path, "--study", str(study.file), "--total-trials", "2",
                         UNET_SEARCH_STORAGE=f"postgresql://optuna:secret@127.0.0.1:{port}/study",
                         UNET_SEARCH_TRACKING_URI="http://127.0.0.1:1")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot open the Optuna storage" in done.stderr and f"127.0.0.1:{port}" in done.stderr
    assert "secret" not in done.stderr, "the password is not printed"
    assert "Traceback" not in done.stderr and "sqlalchemy" not in done.stderr.lower()
    assert time.monotonic() - start < 60


# --------------------------------------------------------------------------- search.study.requeue


def _interrupted_study(tmp_path: Path) -> optuna.Study:
    study = optuna.create_study(study_name="rq", storage=f"sqlite:///{tmp_path}/rq.db")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    for n, reason in enumerate(["interrupted", "oom", None]):
        study.add_trial(optuna.trial.create_trial(
            state=FAIL if reason else optuna.trial.TrialState.COMPLETE, value=None if reason else 0.5,
            params={"lr": 1e-3 * (n + 1)}, distributions=dist, user_attrs={"fail_reason": reason} if reason else {}))
    return study


def test_requeue_retries_each_interrupted_trial_once_with_its_params(tmp_path: Path) -> None:
    from search.study.requeue import retry_interrupted

    study = _interrupted_study(tmp_path)
    assert retry_interrupted(study) == [0], "only the interrupted trial; an OOM is the config's own failure"
    assert retry_interrupted(study) == [], "never twice"
    retry = study.trials[-1]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == study.trials[0].params
    assert retry.user_attrs["retry_of"] == 0 and retry.system_attrs["retry_history"] == [0]
    # The retry interrupted in turn is retried once more, then no more: a chain of 3 attempts at most.
    retried = []
    for _ in range(2):
        trial = study.ask()  # Optuna's ask runs the WAITING retry first
        trial.set_user_attr("fail_reason", "interrupted")
        study.tell(trial, state=FAIL)
        retried.append(retry_interrupted(study))
    assert retried == [[3], []], "trial 3 (retry of 0) is retried as 4; 4 is the third attempt: no more"
    assert study.trials[4].params == study.trials[0].params and study.trials[4].user_attrs["retry_of"] == 3


def test_requeue_command_says_when_there_is_no_study_or_no_database(tmp_path: Path, capsys) -> None:
    from search.study.requeue import NO_STUDY, main

    missing = ["--storage", f"sqlite:///{tmp_path}/none.db", "--study-name", "nope", "--total-trials", "3"]
    assert main(missing) == NO_STUDY
    port = free_ports(1)[0]
    assert main(["--storage", f"postgresql://u:pw@127.0.0.1:{port}/db", "--study-name", "x"]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and "cannot open the Optuna storage" in err and ":pw@" not in err


def test_search_run_with_an_unreachable_database_exits_2_with_the_url(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    port = free_ports(1)[0]
    env = StudyEnv(tmp_path, "down", storage=f"postgresql://optuna:secret@127.0.0.1:{port}/study", **TINY)
    assert env.run("--trials", "0") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot open the Optuna storage postgresql://optuna:***@127.0.0.1:{port}/study" in err
    assert "secret" not in err
