"""What the Runs pane's charts and reach table show, from runs' (tokens, val loss) curves:
plain functions, no widgets (the pane puts their answers in its LineCharts and DataTable)."""

from __future__ import annotations

from workbench.tui.widgets.charts import Series
from workbench.tui.widgets.train_views import si

COLORS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")
SPAN_FOR_LOG_X = 4.0  # overlaid runs whose token counts differ this much get a log x axis


def colors_of(shown: list[str]) -> dict[str, str]:
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(shown)}


def curve_series(curves: dict[str, list], shown: list[str], smoothing: float = 0.0) -> tuple[list[Series], bool]:
    """The overlay's (or a metric panel's) series, each run's curve smoothed at weight
    ``smoothing`` (``runs.smooth.debiased_ema``; 0: raw), and whether the x axis is logarithmic:
    a short run beside a long one would be squashed against the left edge on a linear axis."""
    from workbench.runs.smooth import debiased_ema

    colors = colors_of(shown)
    ends = [c[-1][0] for c in (curves.get(n, []) for n in shown) if c and c[-1][0] > 0]
    log_x = len(ends) > 1 and max(ends) / min(ends) >= SPAN_FOR_LOG_X
    series = [Series(n, [float(x) for x, _ in curves.get(n, [])],
                     debiased_ema([y for _, y in curves.get(n, [])], smoothing), color=colors[n])
              for n in shown]
    return series, log_x


def diff_series(cmp: dict, shown: list[str]) -> list[Series]:
    """run − baseline for every shown run but the baseline (``runs.compare_curves``), on log x."""
    colors = colors_of(shown)
    out = []
    for row in cmp["vs_baseline"]:
        if row["name"] == cmp["baseline"]:
            continue
        pts = [(x, d) for x, d in row["diff_vs_baseline"] if x > 0]
        out.append(Series(row["name"], [float(x) for x, _ in pts], [d for _, d in pts], color=colors[row["name"]]))
    return out


def reach_rows(cmp: dict) -> list[tuple[str, ...]]:
    """(run, tokens to the baseline's final loss, × the baseline's, val loss and top-1 accuracy
    − the baseline's at the last point both reached) rows of the reach table."""
    rows = []
    for row in cmp["vs_baseline"]:
        t, ratio = row["tokens_to_baseline_final"], row["ratio_to_baseline"]
        loss, acc = row["diff_vs_baseline"], row.get("top1_diff_vs_baseline") or []
        rows.append((row["name"], si(t) if t is not None else "not reached", f"{ratio:.2f}" if ratio else "—",
                     f"{loss[-1][1]:+.4f}" if loss else "—", f"{acc[-1][1]:+.4f}" if acc else "—"))
    return rows
