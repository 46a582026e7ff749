"""The confirmation: each retrained configuration's search value next to its confirmed mean ± sd."""

from __future__ import annotations

import optuna

from search.report.html import Section, note, table
from search.study.confirm_record import plus_minus, read_record, seeds_text

NOT_CONFIRMED = ("Not confirmed: each trial's value is one training run with one seed, and the best of many "
                 "such values is partly luck. `python -m search.confirm --study {name} --top 3 --seeds 3` retrains "
                 "the top trials with fresh seeds and moves the registry's champion to the best confirmed mean.")


def confirm_section(study: optuna.Study) -> Section:
    record = read_record(study)
    if record is None:
        return Section("confirmation", "Confirmation", note(NOT_CONFIRMED.format(name=study.study_name)))
    champion = (record.get("champion") or {}).get("trial")
    rows, classes = [], []
    for c in record["configs"]:
        finals = ", ".join(f"{r['final']:.4f}" if r["final"] is not None else r["status"].lower() for r in c["runs"])
        n = c["finished"]
        rows.append([c["trial"], f"{c['search_value']:.4f}", plus_minus(c["final_mean"], c["final_sd"], n),
                     plus_minus(c["best_mean"], c["best_sd"], n), seeds_text(n, len(record["seeds"])),
                     finals, "champion" if c["trial"] == champion else ""])
        classes.append("best" if c["trial"] == champion else "")
    header = ["trial", "search val mIoU", "confirmed final (mean ± sd)", "confirmed best (mean ± sd)",
              "retrains", "final per seed", ""]
    epochs = f"{record['epochs']} epochs each" if record.get("epochs") else "full epochs"
    legend = (f"<p>The top {record['top']} trials' configurations retrained from scratch with the fresh seeds "
              f"{record['seeds']}, {epochs}, no pruning (MLflow runs <code>confirm-NNN-seed-K</code>). Ranked by "
              f"the {record['rank_by']}; the champion is highlighted.</p>")
    if not record.get("complete"):
        legend += note("The confirmation is incomplete: rerun search.confirm to finish it.")
    return Section("confirmation", "Confirmation", legend + table(header, rows, numeric={0}, row_classes=classes))
