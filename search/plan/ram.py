"""Memory rule: the decoded dataset must fit in RAM, or the plan refuses with the figures.

`search.run` decodes every image and label once and keeps them in memory (3 + 1 bytes a pixel, at
the files' own size: the resize is applied per batch, later). Each process holds its own copy:
with `--workers N` (N > 1) the parent decodes one before it starts the workers (it validates the
data and logs its fingerprint) and each worker decodes another, so N + 1 copies. The plan allows
those copies half of the available memory, leaving the rest to the models, the batched data path's
copy and the trackers. A dataset over that is refused with the sizes that would fit, and the
number of workers that would.
"""

from __future__ import annotations

import math
import os

from search.plan.decisions import Decision, PlanError
from search.plan.survey import Survey

GB = 1e9
RAM_SHARE = 0.5


def available_ram() -> int:
    """Bytes of memory available now (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def dataset_copies(workers: int) -> int:
    """Decoded copies of the dataset `search.run --workers N` holds: the parent's, plus one a worker."""
    return 1 if workers <= 1 else workers + 1


def plan_ram(survey: Survey, ram_bytes: int | None = None, source: str = "available", workers: int = 1) -> Decision:
    """A note with the figures when the decoded copies fit in RAM_SHARE of `ram_bytes`; else PlanError."""
    ram = available_ram() if ram_bytes is None else ram_bytes
    copies = dataset_copies(workers)
    one, allowed = survey.decoded_bytes(), RAM_SHARE * ram
    need = copies * one
    n = len(survey.train_sizes) + len(survey.val_sizes)
    times = "" if copies == 1 else f" x {copies} copies (--workers {workers}: the parent's and one a worker)"
    figures = (f"the decoded dataset takes {one / GB:.3g} GB ({n} images and labels, 4 bytes a pixel){times}; "
               f"{ram / GB:.3g} GB of memory {source}")
    if need <= allowed:
        return Decision("data", None, why=f"{figures}: fits in {RAM_SHARE:.0%} of it")
    scale = math.sqrt(allowed / need)
    longest = max(max(s) for s in (*survey.train_sizes, *survey.val_sizes))
    fewer = ""
    if copies > 1:
        fit = int(allowed // one) - 1  # workers whose copies fit beside the parent's
        if fit >= 2:
            fewer = f", or run at most --workers {fit}"
        elif one <= allowed:
            fewer = ", or run one process (no --workers)"
    raise PlanError(f"{survey.source}: {figures}, so it does not fit in the {allowed / GB:.3g} GB ({RAM_SHARE:.0%}) "
                    f"a search may use. Downscale the image and label files by {scale:.2f} (longest side "
                    f"{longest} -> {int(longest * scale)} px; labels with nearest-neighbour), or use fewer "
                    f"images{fewer}")
