# The unet-search image that deploy/k8s runs (the workers and the MLflow server). Its install steps are
# the README's Quick start, word for word (tests/test_deploy_files.py checks that); the pinned torch
# from PyPI is a CUDA build, and the GPU comes from the node (NVIDIA's container toolkit). Not built in CI.
#   docker build -t registry.example.com/unet-search:0.1.0 . && docker push registry.example.com/unet-search:0.1.0
FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[dev]"
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
CMD ["python", "-m", "search.run", "--help"]
