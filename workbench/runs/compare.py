"""Runs side by side: validation curves interpolated at matching tokens, the difference from
a baseline, and the tokens each run took to reach the baseline's best loss.
"""

from __future__ import annotations


from workbench.errors import WorkbenchError
from workbench.runs.folder import Run, eval_curve


# --- comparing runs --------------------------------------------------------------------------


def interp(curve: list[tuple[int, float]], x: float) -> float | None:
    """Linear interpolation of a (tokens, loss) curve; None outside its range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Tokens at which a loss curve first reaches ``target`` (interpolated), or None."""
    for (x0, y0), (x1, y1) in zip([curve[0]] + curve, curve):
        if y1 <= target:
            if y0 == y1 or x0 == x1:
                return float(x1)
            return x0 + (y0 - target) * (x1 - x0) / (y0 - y1)
    return None


def compare_curves(curves: dict[str, list[tuple[int, float]]], baseline: str) -> dict:
    """Runs against a baseline, from their (tokens, val loss) curves: the baseline's final loss,
    and for each run its difference from the baseline at the baseline's eval points, the tokens
    it needed to reach the baseline's final loss and that as a ratio of the baseline's own."""
    base = curves.get(baseline) or []
    if not base:
        raise WorkbenchError(f"baseline run {baseline!r} has no evaluations yet")
    target = base[-1][1]
    base_tokens = tokens_to_reach(base, target)
    rows = []
    for name, c in curves.items():
        reached = tokens_to_reach(c, target) if c else None
        rows.append({
            "name": name,
            "tokens_to_baseline_final": reached,
            "ratio_to_baseline": reached / base_tokens if reached and base_tokens else None,
            "diff_vs_baseline": [(x, interp(c, x) - y) for x, y in base if interp(c, x) is not None],
        })
    return {"baseline": baseline, "baseline_final_loss": target, "vs_baseline": rows}


def compare(runs: list[Run], baseline: Run | None = None) -> dict:
    """Final and best validation loss per run, and with a baseline ``compare_curves`` of them all
    (the Runs pane draws the same numbers)."""
    out = {"runs": [r.summary() for r in runs]}
    if baseline is not None:
        curves = {r.name: eval_curve(r) for r in runs}
        cmp = compare_curves({**curves, baseline.name: curves.get(baseline.name) or eval_curve(baseline)},
                             baseline.name)
        cmp["vs_baseline"] = [row for row in cmp["vs_baseline"] if row["name"] in curves]
        out.update(cmp)
    return out
