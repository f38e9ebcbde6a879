"""Terminal line charts for training metrics: a history of log/eval rows with a debiased EMA of
the loss (its weight set by keys: ``runs.smooth``), thinning to the plot's width, and a
``PlotextPlot`` that redraws only when asked.

The Train pane calls ``LineChart.set_series`` as often as it likes; the (pure-Python, slow)
plotext build runs only when ``redraw`` is called, which the pane throttles to a few per second.
``LineChart.add_listener`` lets a measurement (``workbench bench``'s app task) see when a chart
is given new series and when it is painted, without wrapping its methods.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from textual.containers import Horizontal, VerticalScroll
from textual_plotext import PlotextPlot

X_MODES = ("steps", "tokens", "time")
X_KEYS = {"steps": "step", "tokens": "tokens", "time": "elapsed"}
EMA_WEIGHT = 0.9  # the loss chart's smoothing until the user changes it


def thin(xs: list[float], ys: list[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points: consecutive points averaged in equal buckets (the shape of a
    noisy curve survives, unlike striding); the last point is always the last one seen."""
    n = len(xs)
    if max_points < 2 or n <= max_points:
        return list(xs), list(ys)
    ox, oy = [], []
    for b in range(max_points):
        lo, hi = b * n // max_points, (b + 1) * n // max_points
        if hi <= lo:
            continue
        ox.append(sum(xs[lo:hi]) / (hi - lo))
        oy.append(sum(ys[lo:hi]) / (hi - lo))
    ox[-1], oy[-1] = xs[-1], ys[-1]
    return ox, oy


@dataclass
class MetricsHistory:
    """Rows of one run as they arrive (train ``log`` rows and ``eval`` rows)."""

    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    smoothing: float = EMA_WEIGHT  # the EMA's weight (``runs.smooth.WEIGHTS``)
    _smoothed: tuple = ((), 0, 0.0)  # (curve, rows, weight) it was made for: the header reads it per event

    def clear(self) -> None:
        self.train.clear()
        self.evals.clear()
        self._smoothed = ((), 0, 0.0)

    def add_train(self, row: dict) -> None:
        """Keep a train row with a finite loss."""
        loss = row.get("loss")
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return
        self.train.append(row)

    def smoothed(self) -> list[float]:
        """The train loss smoothed with the current weight (debiased: ``runs.smooth``)."""
        from workbench.runs.smooth import debiased_ema

        curve, rows, weight = self._smoothed
        if (rows, weight) != (len(self.train), self.smoothing):
            curve = debiased_ema([float(r["loss"]) for r in self.train], self.smoothing)
            self._smoothed = (curve, len(self.train), self.smoothing)
        return curve  # shared: callers read it

    def add_eval(self, row: dict) -> None:
        v = row.get("val_loss")
        if isinstance(v, (int, float)) and math.isfinite(v):
            self.evals.append(row)

    def xs(self, rows: list[dict], mode: str) -> list[float]:
        key = X_KEYS[mode]
        return [float(r.get(key) or 0) for r in rows]

    def series(self, name: str, mode: str) -> tuple[list[float], list[float]]:
        if name == "ema":
            return self.xs(self.train, mode), self.smoothed()
        if name == "val_loss":
            return self.xs(self.evals, mode), [float(r["val_loss"]) for r in self.evals]
        rows = [r for r in self.train if isinstance(r.get(name), (int, float))]
        if not rows:  # an evaluation's metric (bpb, top1, ...)
            rows = [r for r in self.evals if isinstance(r.get(name), (int, float))]
        return self.xs(rows, mode), [float(r[name]) for r in rows]


@dataclass
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    color: str = "cyan"
    marker: str = "braille"
    scatter: bool = False


ChartListener = Callable[[str, float], None]


class LineChart(PlotextPlot):
    """A titled chart of a few series; ``redraw`` rebuilds it, thinned to the current width."""

    def __init__(self, title: str, **kw):
        super().__init__(**kw)
        self.title = title
        self.series: list[Series] = []
        self.xlabel = ""
        self.log_y = False
        self.log_x = False
        self.zero_line = False
        self.clip_outliers = False  # y-range from a quantile band (``runs.smooth.robust_band``)
        self.y_range: tuple[float, float] | None = None  # the band drawn, when it clipped anything
        self.clipped = 0  # points outside it, drawn on its edge as ▲ / ▼
        self.empty_text = "no data yet"
        self._listeners: list[ChartListener] = []

    def add_listener(self, listener: ChartListener) -> None:
        """Call ``listener(event, t)`` from now on, ``t`` being ``time.perf_counter()``:

        - ``"redraw"`` when ``redraw`` has set up the plot from the current series (its owner
          acted on new data or a new view; the picture is not built yet);
        - ``"painted"`` when ``render`` has built the picture Textual puts on the screen.

        For measurements (``workbench bench`` times key press to repaint with it). Listeners run
        on the UI thread inside the redraw and the paint: they must be quick and must not touch
        widgets.
        """
        self._listeners.append(listener)

    def _tell(self, event: str) -> None:
        if self._listeners:
            t = time.perf_counter()
            for listener in self._listeners:
                listener(event, t)

    def set_series(self, series: list[Series], xlabel: str = "", log_y: bool = False,
                   log_x: bool = False, zero_line: bool = False, clip_outliers: bool = False) -> None:
        self.series, self.xlabel = series, xlabel
        self.log_y, self.log_x, self.zero_line = log_y, log_x, zero_line
        self.clip_outliers = clip_outliers

    def render(self):
        """The plot; if plotext cannot build it (it has raised IndexError on some sizes and
        data, e.g. a legend that does not fit), one line saying so instead of a crash."""
        try:
            picture = super().render()
        except (IndexError, ValueError, ZeroDivisionError, OverflowError) as e:
            from rich.text import Text

            picture = Text(f"{self.title}: cannot be drawn at {self.size.width}×{self.size.height} "
                           f"({type(e).__name__}); resize, or press a chart key to redraw", style="dim")
        self._tell("painted")
        return picture

    @property
    def max_points(self) -> int:
        # braille packs two points per column; leave room for the y tick labels
        return max(8, 2 * (self.size.width - 10))

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        if self.xlabel:
            plt.xlabel(self.xlabel)
        drawn = False
        all_x: list[float] = []
        all_y: list[float] = []
        shown = [(s, [(x, y) for x, y in zip(s.xs, s.ys) if math.isfinite(y)
                      and (not self.log_y or y > 0) and (not self.log_x or x > 0)]) for s in self.series]
        self.y_range, self.clipped, marks = None, 0, []
        if self.clip_outliers:
            from workbench.runs.smooth import robust_band

            self.y_range = robust_band([y for _, pts in shown for _, y in pts])
        if self.y_range is not None:  # points beyond the band sit on its edge, marked
            lo, hi = self.y_range
            marks = [(x, hi if y > hi else lo) for _, pts in shown for x, y in pts if y > hi or y < lo]
            self.clipped = len(marks)
            shown = [(s, [(x, min(max(y, lo), hi)) for x, y in pts]) for s, pts in shown]
        for s, pts in shown:
            if not pts:
                continue
            xs, ys = thin([p[0] for p in pts], [p[1] for p in pts], self.max_points)
            all_x += xs
            all_y += ys
            if s.scatter:
                plt.scatter(xs, ys, marker=s.marker, color=s.color, label=s.label)
            else:
                plt.plot(xs, ys, marker=s.marker, color=s.color, label=s.label)
            drawn = True
        if drawn:
            if self.log_y:
                plt.yscale("log")
            one_x = len(set(all_x)) == 1  # e.g. runs with one evaluation each, at the same tokens
            if self.log_x and not one_x:  # a log axis over one value has no range (plotext overflows)
                plt.xscale("log")
            if self.zero_line:
                plt.hline(0, "gray")
            if self.y_range is not None:
                plt.ylim(*self.y_range)
                hi = self.y_range[1]
                up = [(x, y) for x, y in marks if y == hi]
                down = [(x, y) for x, y in marks if y != hi]
                for pts, marker in ((up, "▲"), (down, "▼")):
                    if pts:
                        plt.scatter([x for x, _ in pts], [y for _, y in pts], marker=marker, color="red")
                title = f"{self.title} · {self.clipped} outlying point(s) on the edge"
                if len(title) > self.size.width - 12:  # plotext leaves out a title wider than its plot
                    title = f"{self.title} · {self.clipped} clipped ▲▼"
                plt.title(title)
            if one_x:
                pad = max(1.0, abs(all_x[0]) * 0.01)
                plt.xlim(all_x[0] - pad, all_x[0] + pad)
            lo, hi = min(all_y), max(all_y)
            if self.y_range is None and not self.log_y and hi - lo <= 1e-9 * max(abs(lo), abs(hi)):
                # a flat curve (a smoothed constant differs from it in the last bits): ticks around it,
                # not 0.300000000000000044
                mid = (lo + hi) / 2
                pad = abs(mid) * 0.05 or 1.0
                plt.ylim(mid - pad, mid + pad)
        else:
            plt.title(f"{self.title} — {self.empty_text}")
        self._tell("redraw")
        self.refresh()


def x_label(mode: str) -> str:
    return {"steps": "step", "tokens": "tokens", "time": "seconds"}[mode]


class MetricGrid(VerticalScroll):
    """One small ``LineChart`` per metric (named by it), two to a row from ``TWO_COLUMNS`` cells
    wide and one below; the Train and Runs panes' panels. ``prefix`` names the CSS classes
    (``PREFIX-panel``, ``PREFIX-grid-row``)."""

    TWO_COLUMNS = 70

    def __init__(self, prefix: str, **kw):
        super().__init__(**kw)
        self.prefix = prefix
        self._shape: tuple = ()  # (metrics, columns) the charts were made for

    def set_metrics(self, metrics: list[str], width: int) -> bool:
        """Charts for ``metrics`` at a pane ``width``; True when they were made again (then draw
        them after the next refresh, once they have a size)."""
        columns = 2 if width >= self.TWO_COLUMNS else 1
        if self._shape == (tuple(metrics), columns):
            return False
        self._shape = (tuple(metrics), columns)
        self.remove_children()
        rows = [metrics[i:i + columns] for i in range(0, len(metrics), columns)]
        self.mount_all([Horizontal(*[LineChart(m, name=m, classes=f"{self.prefix}-panel") for m in row],
                                   classes=f"{self.prefix}-grid-row") for row in rows])
        return True

    def charts(self) -> list["LineChart"]:
        return list(self.query(f".{self.prefix}-panel").results(LineChart))
