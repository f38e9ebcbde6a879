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


def compare_curves(curves: dict[str, list[tuple[int, float]]], baseline: str,
                   top1: dict[str, list[tuple[int, float]]] | None = None) -> dict:
    """Runs against a baseline, from their (tokens, val loss) curves: the baseline's final loss,
    and for each run its difference from the baseline at the baseline's eval points, the tokens
    it needed to reach the baseline's final loss and that as a ratio of the baseline's own. With
    ``top1`` (tokens, top-1 accuracy) curves, each run's top-1 difference the same way. Points
    are matched at equal tokens, interpolated, so runs logged at other steps compare too."""
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
            "diff_vs_baseline": _diff(c, base),
            **({"top1_diff_vs_baseline": _diff(top1.get(name) or [], top1.get(baseline) or [])}
               if top1 is not None else {}),
        })
    return {"baseline": baseline, "baseline_final_loss": target, "vs_baseline": rows}


def _diff(curve: list[tuple[int, float]], base: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """``curve`` − ``base`` at each of the base's points that ``curve`` spans (interpolated)."""
    return [(x, interp(curve, x) - y) for x, y in base if interp(curve, x) is not None]


def data_evals(runs: list[Run]) -> list[dict]:
    """The runs' scores on other text (``workbench eval --data``: a test split, another file),
    one entry per data and split in the order first met, each run's newest score there."""
    from workbench.runs.folder import DATA_EVAL_KEYS

    out: dict[tuple, dict] = {}
    for r in runs:
        for row in r.metrics():
            if row.get("kind") != "data_eval":
                continue
            key = (row.get("data"), row.get("split"))
            entry = out.setdefault(key, {"data": key[0], "split": key[1], "runs": {}})
            entry["runs"][r.name] = {"name": r.name, **{k: row.get(k) for k in DATA_EVAL_KEYS}}
    return [{**e, "runs": list(e["runs"].values())} for e in out.values()]


def compare(runs: list[Run], baseline: Run | None = None) -> dict:
    """Final and best validation loss per run, their scores on other text (``data_evals``), and
    with a baseline ``compare_curves`` of them all (the Runs pane draws the same numbers)."""
    out = {"runs": [r.summary() for r in runs], "data_evals": data_evals(runs)}
    if baseline is not None:
        both = {r.name: r for r in [*runs, baseline]}
        metrics = {name: r.metrics() for name, r in both.items()}
        cmp = compare_curves({n: eval_curve(r, "val_loss", metrics[n]) for n, r in both.items()}, baseline.name,
                             {n: eval_curve(r, "top1", metrics[n]) for n, r in both.items()})
        asked = {r.name for r in runs}
        cmp["vs_baseline"] = [row for row in cmp["vs_baseline"] if row["name"] in asked]
        out.update(cmp)
    return out
