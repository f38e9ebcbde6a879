"""Runs' curves as CSV, for the tools people already plot with (a spreadsheet, pandas, R).

``metrics_table``: one row per point a run logged (train steps and evaluations alike), every
metric a column, the run's name the first; a metric a row lacks is an empty cell.
``compare_table``: the comparison ``runs.compare`` makes, run − baseline in validation loss and
top-1 accuracy at the baseline's evaluation tokens (interpolated). ``write_csv`` writes either
atomically, or to stdout for ``-``.
"""

from __future__ import annotations

import csv
import io
import sys

FIRST = ("run", "kind", "step", "tokens", "elapsed")
COMPARE = ("run", "baseline", "tokens", "val_loss_diff", "top1_diff")


def metrics_table(runs) -> tuple[list[str], list[dict]]:
    """(columns, rows) of every logged point of ``runs`` (``runs.folder.Run``), in their order."""
    columns, rows = list(FIRST), []
    for run in runs:
        for r in run.metrics():
            row = {"run": run.name, **r}
            columns += [k for k in row if k not in columns]
            rows.append(row)
    return columns, rows


def compare_table(cmp: dict) -> tuple[list[str], list[dict]]:
    """(columns, rows) of ``runs.compare.compare_curves``'s differences from the baseline."""
    rows = []
    for row in cmp["vs_baseline"]:
        top1 = dict(row.get("top1_diff_vs_baseline") or [])
        rows += [{"run": row["name"], "baseline": cmp["baseline"], "tokens": x, "val_loss_diff": d,
                  "top1_diff": top1.get(x)} for x, d in row["diff_vs_baseline"]]
    return list(COMPARE), rows


def write_csv(path: str, columns: list[str], rows: list[dict]) -> int:
    """Write the table (a header, then the rows; None as an empty cell) to ``path`` atomically,
    or to stdout when ``path`` is ``-``; the number of rows."""
    from workbench import fileio

    out = io.StringIO()
    w = csv.DictWriter(out, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    if path == "-":
        sys.stdout.write(out.getvalue())
    else:
        fileio.write_text(path, out.getvalue())
    return len(rows)
