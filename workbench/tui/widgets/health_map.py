"""The Train pane's model-health heatmap: one row per layer, one column per health record
(``training.health``), the colour the chosen quantity's value on a scale spanning what is shown
(log10 for the quantities that span decades). A layer whose update/weight leaves the sane band
is marked in red and named under the map."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from workbench.training.health import LABELS, LOG_SCALE, QUANTITIES, fmt, run_flags

# dark blue → teal → yellow (viridis-like), readable on dark and light themes
PALETTE = ("#3b0f70", "#404a8c", "#2f6f8e", "#21918c", "#2db27d", "#6ccd5a", "#b8de29", "#fde725")
CELL = "█"
LABEL_W = 4  # "L12 "


def _scaled(q: str, v):
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    if LOG_SCALE[q]:
        return math.log10(v) if v > 0 else None
    return float(v)


def render_map(rows: list[dict], quantity: str, width: int, height: int) -> Text:
    """The map of ``quantity`` over the newest records that fit ``width`` × ``height`` cells."""
    out = Text(no_wrap=True, overflow="ellipsis")
    title = f"health: {LABELS[quantity]}" + (" (log10)" if LOG_SCALE[quantity] else "")
    if not rows:
        out.append(title + "\n", style="bold")
        out.append("no health records yet (every train.health_interval steps; 0 = off)", style="dim")
        return out
    n_layers = max(len(r.get(quantity) or []) for r in rows)
    cols = max(1, width - LABEL_W)
    shown = rows[-cols:]
    cell_w = max(1, min(4, cols // len(shown)))  # few records: wider cells
    found = run_flags(rows)
    flagged = {i for i, _ in found}
    vals = [_scaled(quantity, v) for r in shown for v in (r.get(quantity) or [])]
    vals = [v for v in vals if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    span = (hi - lo) or 1.0
    out.append(title + "\n", style="bold")
    if vals:
        a, b = (10 ** lo, 10 ** hi) if LOG_SCALE[quantity] else (lo, hi)
        out.append(" " * LABEL_W + f"{fmt(quantity, a)} ", style="dim")
        for c in PALETTE:
            out.append(CELL, style=c)
        out.append(f" {fmt(quantity, b)}", style="dim")
    out.append("\n")
    room = max(1, height - 4)  # title, scale, steps line, one flag line
    layers = list(range(n_layers))
    if n_layers > room:  # every k-th layer, the last one always
        k = math.ceil(n_layers / room)
        layers = sorted(set(layers[::k]) | {n_layers - 1})
    for i in layers:
        out.append(f"L{i:<{LABEL_W - 1}}"[:LABEL_W], style="bold red" if i in flagged else "dim")
        for r in shown:
            seq = r.get(quantity) or []
            v = _scaled(quantity, seq[i]) if i < len(seq) else None
            if v is None:
                out.append("·" * cell_w, style="red" if i < len(seq) and seq[i] is not None else "dim")
            else:
                out.append(CELL * cell_w, style=PALETTE[min(len(PALETTE) - 1, int((v - lo) / span * len(PALETTE)))])
        out.append("\n")
    out.append(f"steps {shown[0]['step']}–{shown[-1]['step']}" + (f" · {len(layers)} of {n_layers} layers"
                                                                    if len(layers) < n_layers else ""), style="dim")
    if found:
        out.append("\n")
        out.append("! " + found[0][1] + (f" (+{len(found) - 1} more)" if len(found) > 1 else ""), style="bold red")
    return out


class HealthMap(Static):
    """Shows ``render_map`` for the pane's health rows; ``quantity`` is one of ``QUANTITIES``."""

    def __init__(self, **kw):
        super().__init__("", **kw)
        self.rows: list[dict] = []
        self.quantity = QUANTITIES[0]

    def set_rows(self, rows: list[dict]) -> None:
        self.rows = rows
        self.redraw()

    def redraw(self) -> None:
        size = self.content_size
        self.update(render_map(self.rows, self.quantity, size.width or 40, size.height or 10))

    def on_resize(self) -> None:
        self.redraw()
