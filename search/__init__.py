"""The search harness: Optuna studies over `seg` configs, tracked in MLflow.

Entry points: `python -m search.run|predict|ui|report|registry`. `study/` holds the Optuna side
(definitions, space, storages, workers' bookkeeping), `tracking/` the MLflow side, `guards/` what
protects a trial (wall-clock limit, signals that wait for a storage write).
"""
