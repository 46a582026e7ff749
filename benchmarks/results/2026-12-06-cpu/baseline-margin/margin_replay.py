"""What `[confirm] margin` would have retrained in every committed M = 30 real-photo run (tuning data only).

    python benchmarks/results/2026-12-06-cpu/baseline-margin/margin_replay.py [MARGIN]

Reads each run's realdata.json under benchmarks/results/ (the search's trials with their values, the
[baseline] trial marked; the search-minus-baseline test difference) and prints, per run: the [baseline]
trial's value, the best trial's and its lead, what the margin keeps, and the run's test outcome. Where
a `--control` arm exists (the [baseline] configuration trained for the search's final epochs), it says
what keeping the baseline would have scored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2]
CONTROLS = {  # realdata-gap/README.md: the [baseline] configuration at the search's final epochs, test mIoU
    "2026-12-05-cpu/realdata-kvasir-m30": 0.7207,
    "2026-12-06-cpu/realdata-kvasir-m30-seed2": 0.7191,
    "2026-12-05-cpu/realdata-camvid-m30-seed2": 0.4776,
}


def rows(margin: float) -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("*/*/realdata.json")):
        run = json.loads(path.read_text())
        search = run["arms"]["search"]
        if run.get("minutes") != 30 or "trials" not in search:
            continue
        complete = [t for t in search["trials"] if t["state"] == "COMPLETE" and t["best_val_miou"] is not None]
        base = next(t for t in complete if t["baseline"])
        best = max(complete, key=lambda t: (t["best_val_miou"], -t["trial"]))
        lead = best["best_val_miou"] - base["best_val_miou"]
        name = f"{path.parent.parent.name}/{path.parent.name}"
        final = search.get("final") or {}
        test = {arm: (run["arms"].get(arm, {}).get("test") or {}).get("evaluation", {}).get("miou")
                for arm in ("search", "baseline")}
        out.append({"run": name, "baseline_value": base["best_val_miou"], "best": best["trial"],
                    "best_value": best["best_val_miou"], "lead": lead,
                    "keeps": "baseline" if lead <= margin else f"trial {best['trial']}",
                    "retrained": final.get("trial"), "final_epochs": final.get("epochs"),
                    "search_test": test["search"], "baseline_test": test["baseline"],
                    "control_test": CONTROLS.get(name)})
    return out


def main() -> None:
    margin = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
    print(f"margin {margin:g}\n")
    print("| run | [baseline] value | best trial (value) | lead | the margin keeps | trial retrained | "
          "search - baseline, test | control - search, test |")
    print("|---|---:|---|---:|---|---|---:|---:|")
    for r in rows(margin):
        diff = (f"{r['search_test'] - r['baseline_test']:+.4f}" if None not in (r["search_test"], r["baseline_test"])
                else "-")
        ctrl = f"{r['control_test'] - r['search_test']:+.4f}" if r["control_test"] is not None else "-"
        print(f"| {r['run']} | {r['baseline_value']:.4f} | {r['best']} ({r['best_value']:.4f}) | {r['lead']:+.4f} "
              f"| {r['keeps']} | {r['retrained']} | {diff} | {ctrl} |")


if __name__ == "__main__":
    main()
