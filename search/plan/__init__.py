"""Plan a study from a dataset and a device: `python -m search.plan` (see `search.plan.command`).

Modules: `survey` (what is measured in the dataset), one per rule (`classes`, `geometry`, `ram`,
`loss`, `capacity`, `budget`), `device_probe` (the device and what a configuration costs on it),
`planner` (the rules in order), `plan_toml` (the commented study file and the table), `stored`
(`search.run --data DIR` without `--study`: plan once, resume with the stored plan) and `command`.
"""
