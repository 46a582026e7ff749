"""The performance benchmark: one process run measures every section, prints a table and writes JSON.

Run from the repository root (the `benchmarks` package is not installed with `seg` and `search`):

    python -m benchmarks                               # every section, full size, device auto
    python -m benchmarks --tiny --json /tmp/b.json     # seconds-scale smoke run (the test suite's)
    python -m benchmarks --only pruning --pruning-trials 12 --pruning-epochs 9 --seeds 0 1 2
    python -m benchmarks --skip pruning --device cuda

Sections: harness overhead (bare `seg.train.fit` vs a real Optuna + MLflow trial), data pipeline
(loader vs training-step images/s, data-wait fraction), training speed of the report's UNet
(fp32 / bf16 / +channels_last / +compile, fraction of the FLOP floor), per-trial fixed cost,
concurrency (1, 2, 4 trials on one device) and pruning efficiency (same study under Hyperband,
median, SHA and no pruner). Each comparison gives absolute figures and the ratio. The JSON is
rewritten after every section (and every pruning run), so an interrupted run keeps what it measured.
Variants that cannot run here (CUDA-only ones on a CPU) are recorded with null figures and a reason.

Without `--json`, results go to `benchmarks/results/<date>-<cpu|gpu>/<cpu|gpu>-<date>.json` with
the same tables as markdown beside it (`--tiny`: a file in the temp folder). Pruning runs made as
separate processes are merged with `python -m benchmarks.merge`; their recorded no-pruning curves
are replayed under other pruner settings with `python -m benchmarks.replay`.
"""

from __future__ import annotations

import sys

from benchmarks.bench_cli import main

if __name__ == "__main__":
    sys.exit(main())
