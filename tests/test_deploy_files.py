"""The cluster recipes in deploy/ and the Dockerfile, checked offline.

- Every Kubernetes manifest in deploy/k8s is valid against the Kubernetes API's JSON schemas
  (`kubernetes-validate`, which ships them: no cluster, no network), strictly (no unknown field).
  So are the kustomization's rendered resources, where `kubectl kustomize` is installed.
- The worker Job is an Indexed Job of GPU workers whose seed is its completion index; the study in
  the ConfigMap is one our loader accepts.
- The Dockerfile is not built here (no Docker): its install steps must be the README's Quick start.
- The SLURM scripts are valid bash (deploy/slurm; tests/test_slurm_array.py runs search.sbatch).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import tomllib
import yaml

from search.study.definition import parse_study

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
K8S_VERSION = kubernetes_validate.latest_version()


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def worker_job() -> dict:
    (job,) = [d for d in documents((K8S / "workers-job.yaml").read_text()) if d["kind"] == "Job"]
    return job


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    docs = documents(path.read_text())
    assert docs, f"{path} holds no resource"
    for doc in docs:
        validate(doc)


def test_the_validator_refuses_a_broken_manifest() -> None:
    job = worker_job()
    job["spec"]["completionz"] = 4  # a typo: strict validation refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError, match="completionz"):
        validate(job)
    job = worker_job()
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "one gpu"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


def test_the_kustomization_lists_every_manifest_and_sets_image_and_worker_count() -> None:
    kust = kustomization()
    assert sorted(kust["resources"]) == [p.name for p in MANIFESTS]
    assert [i["name"] for i in kust["images"]] == ["unet-search"]
    (patch,) = kust["patches"]
    assert patch["target"] == {"kind": "Job", "name": "unet-search-workers"}
    ops = {op["path"]: op["value"] for op in yaml.safe_load(patch["patch"])}
    assert set(ops) == {"/spec/completions", "/spec/parallelism"} and len(set(ops.values())) == 1


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (its built-in kustomize renders offline) is not installed: each file is "
                           "validated on its own by the test above")
def test_the_rendered_kustomization_is_valid() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    docs = documents(rendered)
    assert sorted(d["kind"] for d in docs) == sorted(d["kind"] for p in MANIFESTS for d in documents(p.read_text()))
    for doc in docs:
        validate(doc)
    kust = kustomization()
    image = kust["images"][0]
    images = {c["image"] for d in docs if d["kind"] in ("Job", "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {f"{image['newName']}:{image['newTag']}"}
    (job,) = [d for d in docs if d["kind"] == "Job"]
    workers = yaml.safe_load(kust["patches"][0]["patch"])[0]["value"]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers


def test_workers_are_an_indexed_job_with_one_gpu_each_seeded_by_their_index() -> None:
    job = worker_job()
    assert job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    script = worker["args"][0]
    assert '--seed "$JOB_COMPLETION_INDEX"' in script and "exec python -m search.run" in script
    assert "python -m search.study.requeue" in script
    subprocess.run(["bash", "-n", "-c", script], check=True)
    env = {e["name"]: e for e in worker["env"]}
    assert env["STORAGE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "unet-search-db"
    mounted = {v["name"]: v for v in pod["volumes"]}["study"]["configMap"]["name"]
    assert mounted == "unet-search-study"


def test_the_configmap_study_is_one_search_run_accepts() -> None:
    (cm,) = documents((K8S / "study-configmap.yaml").read_text())
    sdef = parse_study(tomllib.loads(cm["data"]["study.toml"]), Path("study.toml"))
    assert sdef.name and sdef.max_epochs > 0


def test_the_secret_url_names_the_secret_user_and_database() -> None:
    (secret,) = documents((K8S / "secret.yaml").read_text())
    data = secret["stringData"]
    url = f"postgresql://{data['POSTGRES_USER']}:{data['POSTGRES_PASSWORD']}@postgres:5432/{data['POSTGRES_DB']}"
    assert data["storage-url"] == url


# --------------------------------------------------------------------------- Dockerfile and SLURM scripts


def readme_install_steps() -> list[str]:
    """The README's Quick-start command, its install steps only (what comes before `python -m ...`)."""
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", quick, re.S).group(1).strip()
    steps = [s.strip() for s in command.split("&&")]
    return [s for s in steps if not s.startswith("python -m ")]


def dockerfile_run_steps() -> list[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    runs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("RUN ")]
    return [" ".join(s.split()) for run in runs for s in run.split("&&")]


def test_the_dockerfile_installs_as_the_readme_says() -> None:
    readme = readme_install_steps()
    assert readme and readme[-1].startswith("pip install"), readme
    assert dockerfile_run_steps() == [" ".join(s.split()) for s in readme]
    base = re.search(r"^FROM python:(\S+)", (REPO / "Dockerfile").read_text(), re.M).group(1)
    assert base.startswith("3.11"), "the README's Python"
    assert shlex.split(readme[-1])[:4] == ["pip", "install", "-c", "constraints.txt"]


@pytest.mark.parametrize("script", ["search.sbatch", "services.sbatch"])
def test_slurm_scripts_are_valid_bash(script: str) -> None:
    path = REPO / "deploy" / "slurm" / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert path.read_text().startswith("#!/bin/bash")
    assert "#SBATCH" in path.read_text()
