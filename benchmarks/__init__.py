"""The benchmark lab: performance measurements of the harness, run from a checkout, never installed.

Not part of the shipped packages (`pip install` ships `seg` and `search` only; pyproject.toml's
`[tool.setuptools.packages.find]` leaves this folder out). Run it from the repository root:

    python -m benchmarks --tiny --json /tmp/b.json      # the benchmark (every section; see __main__.py)
    python -m benchmarks.merge A.json B.json --json M.json   # merge pruning runs of separate processes
    python -m benchmarks.replay A.json ...              # replay pruner settings on recorded curves
    python -m benchmarks.equal_budget A.json B.json     # pruned vs unpruned at equal epoch budgets
    python -m benchmarks.throughput                     # train-step vs loader images/s of a few UNets

Modules:
    __main__            entry of `python -m benchmarks`
    bench_cli           its argument parsing, section dispatch and incremental JSON writing
    bench_settings      sizes and configs at full size and in --tiny mode
    harness             real harness trials (search.session + Objective) in temp storages
    overhead            section: harness overhead against a bare seg.train.fit
    pipeline            section: loader vs training-step images/s, data-wait fraction
    speed               section: training speed of the report's UNet per variant, fraction of the FLOP floor
    peaks               peak FLOP/s: vendor GPU table, or a matmul measured on the CPU
    fixed_cost          section: per-process and per-trial fixed cost against a minimum-rung trial
    concurrency         section: total images/s with 1, 2, 4 trials on one device
    concurrency_worker  one worker process of the concurrency section
    pruning             section: pruning efficiency, the same study under several pruners
    machine             which machine a run measured (CPU, GPU, threads, versions)
    tables              console tables and the markdown summary
    merge               `python -m benchmarks.merge`
    replay              `python -m benchmarks.replay` (also at equal epoch budgets: --budgets)
    equal_budget        `python -m benchmarks.equal_budget`: pruned vs unpruned at equal epoch budgets
    throughput          `python -m benchmarks.throughput` (was `python -m seg.bench`); its step and
                        loader timers are shared by the pipeline and speed sections

Results live in dated folders, `results/<date>-<cpu|gpu>/`, each with one RESULTS.md saying what
ran and what it showed; `python -m benchmarks` writes `results/<date>-<cpu|gpu>/<cpu|gpu>-<date>.json`
(and `.md`) by default. Per-run files that a merged file already holds go in that folder's `raw/`.
"""
