"""The Optuna side: study definitions (TOML), the search space, samplers and pruners, storages, and
the bookkeeping that lets several workers share one study (quota, stale trials, journal lease)."""
