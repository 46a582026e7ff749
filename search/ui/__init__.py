"""The MLflow UI and optuna-dashboard, started together on loopback: `python -m search.ui`.

`launcher` is the command (checks, links, supervision); `servers` starts, watches and stops child
server processes.
"""
