"""Memory rule: the decoded dataset must fit in RAM, or the plan refuses with the figures.

`search.run` decodes every image and label once and keeps them in memory (3 + 1 bytes a pixel, at
the files' own size: the resize is applied per batch, later). The plan allows the dataset half of
the available memory, leaving the rest to the model, the batched data path's copy and the
trackers. A dataset over that is refused with the sizes that would fit, since only smaller files
make the decoded dataset smaller.
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


def plan_ram(survey: Survey, ram_bytes: int | None = None, source: str = "available") -> Decision:
    """A note with the figures when the decoded dataset fits in RAM_SHARE of `ram_bytes`; else PlanError."""
    ram = available_ram() if ram_bytes is None else ram_bytes
    need, allowed = survey.decoded_bytes(), RAM_SHARE * ram
    n = len(survey.train_sizes) + len(survey.val_sizes)
    figures = (f"the decoded dataset takes {need / GB:.3g} GB ({n} images and labels, 4 bytes a pixel); "
               f"{ram / GB:.3g} GB of memory {source}")
    if need <= allowed:
        return Decision("data", None, why=f"{figures}: fits in {RAM_SHARE:.0%} of it")
    scale = math.sqrt(allowed / need)
    longest = max(max(s) for s in (*survey.train_sizes, *survey.val_sizes))
    raise PlanError(f"{survey.source}: {figures}, so it does not fit in the {allowed / GB:.3g} GB ({RAM_SHARE:.0%}) "
                    f"a search may use. Downscale the image and label files by {scale:.2f} (longest side "
                    f"{longest} -> {int(longest * scale)} px; labels with nearest-neighbour), or use fewer images")
