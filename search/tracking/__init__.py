"""The MLflow side: the client wrapper, one trial's run, its artifacts and pyfunc model, the study's
figures and the dataset fingerprint."""
