"""The markdown side of `benchmarks.realdata`: the test-set table of both arms (and the control's), per-class
IoU, trials by state, predicted vs measured seconds per epoch, the issue's two goals and, with a control, the
gap split into configuration and epochs, from the results dict."""

from __future__ import annotations

from typing import Any

from benchmarks.tables import markdown_table

ARMS = ("search", "baseline")
WITH_CONTROL = (*ARMS, "control")


def _present(arms: dict[str, Any]) -> list[str]:
    """The arms this run has, in order: search, baseline, and the control when it was asked for."""
    return [name for name in WITH_CONTROL if name in arms]


def scored_evaluation(arm: dict[str, Any]) -> dict[str, Any] | None:
    """The arm's test-set evaluation.json record, or None when it was not scored."""
    return (arm.get("test") or {}).get("evaluation")


def arm_rows(arms: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in _present(arms):
        arm, test = arms.get(name, {}), scored_evaluation(arms.get(name, {}))
        counts = arm.get("counts", {})
        rows.append({"arm": name, "test mIoU": test["miou"] if test else None,
                     "test pixel acc": test["pixel_accuracy"] if test else None,
                     "best val mIoU": arm.get("best_val_miou"), "best trial": arm.get("best_trial"),
                     "final epochs": (arm.get("final") or {}).get("epochs"),
                     "complete": counts.get("complete"), "pruned (by budget)":
                         f"{counts['pruned']} ({counts['cut_by_budget']})" if counts else None,
                     "failed": counts.get("failed"), "epochs trained": arm.get("epochs_trained"),
                     "wall min": round(arm["wall_s"] / 60, 1) if arm.get("wall_s") else None})
    return rows


def class_rows(arms: dict[str, Any]) -> list[dict[str, Any]]:
    tests = {name: scored_evaluation(arms.get(name, {})) for name in ARMS}
    names = next((list(t["iou"]) for t in tests.values() if t), [])
    rows = []
    for cls in names:
        row: dict[str, Any] = {"class": cls}
        for name in ARMS:
            row[name] = tests[name]["iou"].get(cls) if tests[name] else None
        s, b = row["search"], row["baseline"]
        row["search - baseline"] = round(s - b, 4) if s is not None and b is not None else None
        rows.append(row)
    return rows


def epoch_rows(arms: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": name, "trial": r["trial"], "baseline": r["baseline"], "state": r["state"],
             "epochs": r["epochs"], "best val mIoU": r["best_val_miou"], "predicted s/epoch": r["predicted_s"],
             "measured s/epoch (median)": r["measured_s"], "first epoch s": r["first_epoch_s"],
             "measured/predicted": r["ratio"], "fail": r["fail_reason"]}
            for name in _present(arms) for r in arms.get(name, {}).get("trials", [])]


def goals(arms: dict[str, Any], difference: dict[str, Any] | None = None) -> list[str]:
    s, b = scored_evaluation(arms.get("search", {})), scored_evaluation(arms.get("baseline", {}))
    lines = []
    if s and b:
        met = s["miou"] >= b["miou"]
        lines.append(f"- Search champion's test mIoU {s['miou']:.4f} vs baseline's {b['miou']:.4f}: "
                     f"goal (search >= baseline) {'met' if met else 'NOT met'}.")
        if difference:
            d = difference
            inside = d["low"] <= 0 <= d["high"]
            lines.append(f"  Search - baseline {d['difference']:+.4f}, {d['confidence']:.0%} interval "
                         f"[{d['low']:+.4f}, {d['high']:+.4f}] ({d['method']}, {d['images']} images, "
                         f"{d['resamples']} resamples): "
                         + ("the test images cannot tell the two apart." if inside else
                            "the test images tell them apart."))
    else:
        lines.append("- Search vs baseline on test: not measured (an arm has no test score).")
    tm = arms.get("search", {}).get("time_model")
    if tm and tm["first_complete_trials"]:
        verdict = "met" if tm["meets_goal"] else "NOT met"
        lines.append(f"- Time model: measured/predicted {tm['first_complete_ratios']} on the first complete "
                     f"trials {tm['first_complete_trials']}: goal (within ±{tm['tolerance']:.0%}) {verdict}; "
                     f"all trials: median {tm['median_ratio_all']}, {tm['within_30pct_all']} within.")
    else:
        lines.append("- Time model: not measured (no complete trial logged both `epoch_seconds` and "
                     "`epoch_seconds_predicted`).")
    return lines


def problems(arms: dict[str, Any], minutes: float) -> list[str]:
    lines = []
    base = arms.get("baseline", {})
    if base.get("wall_s") and base["wall_s"] < 0.75 * minutes * 60:
        lines.append(f"- baseline: trained {base['wall_s'] / 60:.1f} of its {minutes:g} minutes: its "
                     f"{base.get('epochs_planned')} epochs were sized at {base.get('epoch_seconds_used')} s each "
                     f"({base.get('epochs_from')}), and ran faster here; compare with care.")
    for name in _present(arms):
        arm = arms.get(name, {})
        if arm.get("skipped"):
            lines.append(f"- {name}: not run: {arm['reason']}.")
            continue
        if "rc" in arm and arm["rc"] != 0:  # None: killed at its time limit
            lines.append(f"- {name}: `{arm['command']}` exited {arm['rc']} (see {arm['log']}).")
        if arm.get("value_not_best_val_miou"):
            lines.append(f"- {name}: trials {arm['value_not_best_val_miou']} have an Optuna value that is not their "
                         "best reported val mIoU, so the champion (best value) may be the wrong trial.")
        if arm.get("error"):
            lines.append(f"- {name}: {arm['error']}.")
        test = arm.get("test")
        if test and test.get("skipped"):
            lines.append(f"- {name} test score: not run: {test['reason']}.")
        elif test and not test.get("evaluation"):
            lines.append(f"- {name} test score: `{test['command']}` exited {test['rc']} (see {test['log']}).")
    return lines


def gap_rows(gap: dict[str, Any], arms: dict[str, Any]) -> list[dict[str, Any]]:
    """The search-minus-baseline gap split in two (benchmarks.realdata.split_gap), one row each."""
    final = (arms.get("search", {}).get("final") or {}).get("epochs")
    base = arms.get("baseline", {}).get("epochs_planned")
    what = {"configuration": ("search - control", f"the search's configuration against the [baseline] one, "
                                                  f"both trained {final} epochs (and another training seed)"),
            "epochs": ("control - baseline", f"the [baseline] configuration trained {final} epochs against {base} "
                                             "(the same seed)")}
    rows = []
    for part, (pair, meaning) in what.items():
        d = gap.get(part)
        rows.append({"part": part, "difference": pair, "what it measures": meaning,
                     "test mIoU": f"{d['difference']:+.4f}" if d else "not measured",
                     "95% interval": f"[{d['low']:+.4f}, {d['high']:+.4f}]" if d else "-",
                     "told apart": ("no" if d["low"] <= 0 <= d["high"] else "yes") if d else "-"})
    return rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _space(value: Any) -> str:
    """A study-space entry as text: `4-6` for a range, `8/16` for choices, else the value."""
    if isinstance(value, dict) and "low" in value:
        return f"{value['low']}-{value['high']}"
    if isinstance(value, dict) and "choices" in value:
        return "/".join(str(c) for c in value["choices"])
    return str(value)


def markdown_report(results: dict[str, Any]) -> str:
    m, arms = results["machine"], results["arms"]
    lines = [f"# Real data: {results['dataset']}, {results['minutes']:g} minutes per arm", "",
             f"- command: `{results['command']}`",
             f"- data: `{results['data']}`, test: `{results['test']}`; storages and full logs: `{results['work']}`",
             f"- started: {results['started']}, finished: {results.get('finished')}",
             f"- CPU: {m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads); "
             f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}, optuna {m['optuna']}, mlflow {m['mlflow']}", ""]
    for name in _present(arms):
        if arms.get(name, {}).get("command"):
            lines.append(f"- {name}: `{arms[name]['command']}`")
    base = arms.get("baseline", {})
    if base.get("epochs_planned"):
        lines.append(f"- baseline epochs: {base['epochs_planned']} at {base['epoch_seconds_used']} s/epoch "
                     f"({base['epochs_from']})")
    final = arms.get("search", {}).get("final")
    if final:
        # Whether the search crowned the [baseline] configuration itself: then the two arms differ only in
        # the epochs each trained it for (the search's final share against the baseline arm's whole budget).
        crowned = any(r["trial"] == final["trial"] and r["baseline"] for r in arms["search"].get("trials", []))
        which = " (the [baseline] configuration)" if crowned else ""
        if kept := final.get("kept_baseline"):
            which += (f", kept by the [confirm] margin {kept['margin']:g}: trial {kept['trial']} led it by "
                      f"{kept['lead']:.4f}")
        against = f" (the baseline arm: {base['epochs_planned']})" if base.get("epochs_planned") else ""
        lines.append(f"- search's final training: trial {final['trial']}{which} "
                     f"(search val {final['search_value']:.4f}) retrained for {final['epochs']} epochs{against}, "
                     f"val mIoU {_num(final['final_val_miou'])} (best {_num(final['best_val_miou'])}); scored on test: "
                     f"{(final.get('champion') or {}).get('model') or 'none crowned: the best trial'}")
    elif arms.get("search", {}).get("trials"):
        lines.append("- search's final training: none (the plan kept no [confirm] share); its best trial is scored")
    if results.get("plan"):
        lines.append("- plan: " + ", ".join(f"{k} {_space(v)}" for k, v in results["plan"].items()))
    lines += ["", "## Goals", "", *goals(arms, results.get("test_difference")), ""]
    issues = problems(arms, results["minutes"])
    if issues:
        lines += ["## Not measured or failed", "", *issues, ""]
    lines += ["## Test set", "", *markdown_table(arm_rows(arms)), ""]
    if results.get("gap"):
        lines += ["## The gap: configuration or epochs", "", *markdown_table(gap_rows(results["gap"], arms)), ""]
    classes = class_rows(arms)
    if classes:
        lines += ["## Per-class IoU on the test set", "", *markdown_table(classes), ""]
    epochs = epoch_rows(arms)
    if epochs:
        lines += ["## Trials: predicted vs measured seconds per epoch", "", *markdown_table(epochs), ""]
    return "\n".join(lines) + "\n"
