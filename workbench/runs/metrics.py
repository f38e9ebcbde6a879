"""Every metric a run logged, as curves, and runs ordered by one of them.

A run's ``metrics.jsonl`` rows of kind ``train`` (loss, lr, grad_norm, tok_s, mem, ...) and
``eval`` (val_loss, val_ppl, bpb, top1, top5, ...) hold numbers under names the trainer (or an
experiment) chose; the metrics are whatever numeric keys those rows carry — never a fixed list —
less the x positions and bookkeeping (``NOT_METRICS``). ``data_eval`` rows (a run scored on other
text by ``workbench eval --data``) stay out, as they stay out of the best figures.

Ordering (``workbench runs list --sort``, the Runs pane's ctrl+s) is by name, by best bits per
byte (how a sweep ranks), or by a metric's ``last`` or ``best`` value after the debiased EMA of
``runs.smooth`` at the given weight. Best is the lowest value, except for accuracies (``top1``,
``top5``, names containing ``acc``) and throughput (``tok_s``), where it is the highest — decided
from the name. Pinned runs come first whatever the order; runs without the metric come last.
"""

from __future__ import annotations

import math
import re

from workbench.errors import WorkbenchError

KINDS = ("train", "eval")
NOT_METRICS = ("step", "tokens", "elapsed", "progress", "val_tokens")  # where a row is, how much it read
HIGHER_IS_BETTER = re.compile(r"^top\d+|acc|tok_s$", re.IGNORECASE)
WHICH = ("best", "last")
PLAIN_SORTS = ("name", "bpb")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_names(rows: list[dict]) -> list[str]:
    """The metrics of a run's ``metrics.jsonl`` rows, in the order they first appear."""
    names: dict[str, None] = {}
    for r in rows:
        if r.get("kind") in KINDS:
            names.update((k, None) for k, v in r.items() if k not in NOT_METRICS and _number(v))
    return list(names)


def curves(rows: list[dict], x: str = "tokens") -> dict[str, list[tuple[float, float]]]:
    """Every metric of ``rows`` as a list of (``x``, value) points in logged order."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("kind") not in KINDS:
            continue
        at = r.get(x) or 0
        for k, v in r.items():
            if k not in NOT_METRICS and _number(v):
                out.setdefault(k, []).append((at, float(v)))
    return out


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (accuracies, throughput), from its name."""
    return bool(HIGHER_IS_BETTER.search(metric))


def sort_value(curve: list[tuple[float, float]], metric: str, which: str, smoothing: float) -> float | None:
    """The ``last`` or ``best`` value of ``curve`` smoothed at weight ``smoothing``; None if empty."""
    from workbench.runs.smooth import debiased_ema

    ys = [y for y in debiased_ema([y for _, y in curve], smoothing) if math.isfinite(y)]
    if not ys:
        return None
    if which == "last":
        return ys[-1]
    return max(ys) if higher_is_better(metric) else min(ys)


def parse_sort(text: str) -> tuple[str, str | None]:
    """``name``, ``bpb`` or ``METRIC[:best|:last]`` (best when not said) as (key, which)."""
    text = (text or "name").strip()
    if text in PLAIN_SORTS:
        return text, None
    metric, _, which = text.partition(":")
    which = which or "best"
    if not metric or which not in WHICH:
        raise WorkbenchError(f"sort {text!r} is not name, bpb or METRIC[:best|:last] (e.g. val_loss:best)")
    return metric, which


def describe(by: str, smoothing: float = 0.0) -> str:
    """How an order reads in a status line: ``val_loss, best (lowest first), smoothed 0.60``."""
    key, which = parse_sort(by)
    if which is None:
        return "best bits per byte" if key == "bpb" else "name"
    direction = "highest first" if higher_is_better(key) else "lowest first"
    smooth = f", smoothed {smoothing:.2f}" if smoothing else ""
    return f"{key}, {which} ({direction}){smooth}"


def sort_runs(rows: list[dict], by: str = "name", run_curves: dict[str, dict] | None = None,
              smoothing: float = 0.0) -> list[dict]:
    """``Run.summary`` rows in the order ``by`` names (``parse_sort``), pinned runs first.
    ``run_curves``: each run's ``curves`` (needed for a metric order); each row of a metric order
    gets its ``sort_value``. A metric no run logged is an error naming the ones they did."""
    key, which = parse_sort(by)
    if which is None:
        if key == "bpb":
            rows = sorted(rows, key=lambda r: (r.get("best_bpb") is None, r.get("best_bpb") or 0.0, r["name"]))
        else:
            rows = list(rows)  # list_runs' order: by name
    else:
        run_curves = run_curves or {}
        logged = {m for c in run_curves.values() for m in c}
        if key not in logged:
            raise WorkbenchError(f"no run logged metric {key!r}; they logged: "
                                 f"{', '.join(sorted(logged)) or 'nothing yet'}")
        sign = -1.0 if higher_is_better(key) else 1.0  # the better runs first, by last value too
        rows = [{**r, "sort_value": sort_value((run_curves.get(r["name"]) or {}).get(key, []), key, which, smoothing)}
                for r in rows]
        rows.sort(key=lambda r: (r["sort_value"] is None, sign * (r["sort_value"] or 0.0), r["name"]))
    return [r for r in rows if r.get("pinned")] + [r for r in rows if not r.get("pinned")]
