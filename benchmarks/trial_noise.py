"""Can a study's trials rank configurations? Seed noise against the spread between configurations.

    python -m benchmarks.trial_noise --repeats sqlite:///runs/optuna.db base12 \\
        --configs sqlite:///runs/optuna.db nop-s10 --configs sqlite:///other.db nop-s11

`--repeats STORAGE STUDY`: a study whose complete trials all train one configuration, each with its own
seed (a study file with every parameter fixed, `search.run --pruner none`; trial seeds follow the
trial number). `--configs STORAGE STUDY`: a study of sampled configurations run without pruning; its
`[baseline]` trial (user attr `baseline`) counts as one more repeat. Only trials of the longest length
given count, so that every value had the same number of epochs.

The value of a trial is the one the search ranks by (its best val mIoU). If one run of a configuration
scatters by sd_seed around its mean, and the observed values of different configurations scatter by
sd_configs, the configurations' own differences scatter by about sqrt(sd_configs^2 - sd_seed^2), and a
single trial's value ranks them with reliability 1 - sd_seed^2 / sd_configs^2 (the share of the
observed variance that is the configuration's, not the seed's; 0: the ranking is a lottery).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import optuna

from benchmarks.replay import complete_trials


def split_values(repeats: Sequence[optuna.trial.FrozenTrial], configs: Sequence[optuna.trial.FrozenTrial]
                 ) -> tuple[int, list[float], list[float]]:
    """(epochs, repeat values, configuration values) over the trials of the longest length given."""
    epochs = max(len(t.intermediate_values) for t in [*repeats, *configs])
    repeats, configs = ([t for t in ts if len(t.intermediate_values) == epochs] for ts in (repeats, configs))
    baseline = [t for t in configs if t.user_attrs.get("baseline")]
    return (epochs, [t.value for t in [*repeats, *baseline]],
            [t.value for t in configs if not t.user_attrs.get("baseline")])


def noise_summary(repeat_values: Sequence[float], config_values: Sequence[float]) -> dict[str, float]:
    """sd over seeds of one configuration, sd over configurations, and the reliability of one trial."""
    if len(repeat_values) < 2 or len(config_values) < 2:
        raise ValueError(f"need at least 2 repeats and 2 configurations of the same length; got "
                         f"{len(repeat_values)} and {len(config_values)}")
    sd_seed, sd_configs = statistics.stdev(repeat_values), statistics.stdev(config_values)
    var_between = max(0.0, sd_configs ** 2 - sd_seed ** 2)  # the configurations' own variance
    return {"sd_seed": sd_seed, "sd_configs": sd_configs, "sd_between": var_between ** 0.5,
            "reliability": var_between / sd_configs ** 2 if sd_configs > 0 else 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trial_noise", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", action="append", nargs=2, metavar=("STORAGE", "STUDY"), default=[],
                   help="a study of one configuration under several seeds")
    p.add_argument("--configs", action="append", nargs=2, metavar=("STORAGE", "STUDY"), default=[],
                   help="a study of sampled configurations, run without pruning")
    args = p.parse_args(argv)
    if not args.configs:
        p.error("give at least one --configs STORAGE STUDY")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        repeats = [t for s, n in args.repeats for t in complete_trials(s, n)]
        configs = [t for s, n in args.configs for t in complete_trials(s, n)]
        if not repeats and not configs:
            raise ValueError("no complete trial in the studies given")
        epochs, rep, conf = split_values(repeats, configs)
        got = noise_summary(rep, conf)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"trials of {epochs} epochs: {len(rep)} runs of one configuration, {len(conf)} other configurations")
    print(f"one configuration, by seed: {' '.join(f'{v:.3f}' for v in sorted(rep))} "
          f"(mean {statistics.fmean(rep):.3f}, sd {got['sd_seed']:.3f})")
    print(f"configurations: mean {statistics.fmean(conf):.3f}, sd {got['sd_configs']:.3f}, "
          f"range {min(conf):.3f}-{max(conf):.3f}")
    print(f"the configurations' own sd about {got['sd_between']:.3f}; one trial ranks them with reliability "
          f"{got['reliability']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
