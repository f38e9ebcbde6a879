"""The Runs pane: every run in a table, their validation curves overlaid against tokens, and a
comparison against a chosen baseline (run − baseline on log-x tokens, tokens to reach the
baseline's final loss). Actions on the run under the cursor: resume, open in Trace or Chat,
export, rename, delete, pin (``p``: listed first, always drawn, even where the filter hides it).
A sweep (``sweep.run_sweep``, as `workbench sweep`) starts here too: its runs appear as they
finish, and the table then ranks by bits per byte. ctrl+s orders the table by name, bits per
byte or any logged metric's last or best smoothed value (``runs.metrics.sort_runs``, as
`workbench runs list --sort`).

The charts smooth with ``runs.smooth`` (``>``/``<``, the weight in their titles; the baseline
comparison stays raw: its numbers are `runs compare`'s) and scale their y-range to a quantile
band, outliers marked on its edge (``o``), as the Train pane does. ``m`` picks metrics for a
grid of small charts, one per metric, the shown runs in each (its own view: ctrl+f).

Run folders are read in a thread worker (metrics files can be long); actions that change the
disk are refused for a run that is still training. Where the screen is narrow the table keeps
its main columns and the line above it details the run under the cursor; where it is narrow or
short (``one-view``) the overlay and the baseline comparison take turns (``ctrl+f``).
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from workbench.errors import WorkbenchError, user_message
from workbench.runs.folder import summary_cells
from workbench.tui.panes.base import OpenRun, Pane
from workbench.tui.widgets.charts import LineChart, MetricGrid
from workbench.tui.widgets.runs_views import COLORS, curve_series, diff_series, reach_rows
from workbench.tui.widgets.train_views import si

MAX_OVERLAY = len(COLORS)
HINT = "space selects runs for the overlay; the keys below act on the run under the cursor"
# (key, header, narrow header): the narrow table keeps the first column set, the detail line
# above it says the rest for the run under the cursor
COLUMNS = (("mark", " "), ("name", "name"), ("preset", "preset"), ("params", "params"), ("tokens", "tokens"),
           ("val", "best val"), ("bpb", "bits/byte"), ("tok_s", "tok/s"), ("date", "date"), ("status", "status"))
NARROW_COLUMNS = ("mark", "name", "tokens", "val", "bpb", "tok_s", "status")
NARROW_HEADERS = {"val": "val", "bpb": "bpb"}
VIEWS = ("curves", "vs", "panels")  # where the pane is narrow or short; else curves and vs share one view
PIN = "⚑"


class RunsPane(Pane):
    """List, compare and act on runs."""

    class Loaded(Message):
        def __init__(self, rows: list[dict], curves: dict[str, list]):
            super().__init__()
            self.rows, self.curves = rows, curves

    class Exported(Message):
        def __init__(self, text: str, error: bool):
            super().__init__()
            self.text, self.error = text, error

    def __init__(self, ws, **kw):
        super().__init__(**kw)
        self.ws = ws
        self.rows: list[dict] = []
        self.curves: dict[str, list[tuple[float, float]]] = {}  # validation loss by tokens, per run
        self.top1: dict[str, list[tuple[float, float]]] = {}  # top-1 accuracy by tokens, per run
        self.selected: set[str] = set()
        self.baseline: str | None = None
        self._cursor_to: str | None = None  # the row the cursor goes to at the next refill
        self.loaded = False
        self.view = VIEWS[0]
        self._narrow: bool | None = None
        self._status_is_detail = True
        self.sort = "name"
        self._highlighted_run: str | None = None
        self._listed: list[dict] = []
        self._form = None  # the Config pane's form, a sweep's possible base
        self.filter = ""  # a regular expression over names and tags (``runs.labels``); "" shows all
        self._rx = None
        self.sweep_job = None  # a sweep.SweepJob, once one was started here
        self._sweep_shown = False  # its outcome is in the status line
        self.run_curves: dict[str, dict[str, list]] = {}  # every logged metric by tokens, per run (runs.metrics)
        self.smoothing = 0.0  # the charts' EMA weight (runs.smooth.WEIGHTS; keys > and <)
        self.clip_outliers = True  # the charts' y-range ignores outliers (key o)
        self.panels: list[str] = []  # the metrics the grid draws, in the order picked
        self._redraw_timer = None

    def compose(self) -> ComposeResult:
        yield Static(HINT, id="runs-status")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="runs-charts"):
            yield LineChart("validation loss vs tokens", id="runs-curves")
            with Vertical(id="runs-vs"):
                yield LineChart("run − baseline", id="runs-diff")
                reach = DataTable(id="runs-reach", cursor_type="none", show_cursor=False)
                reach.add_columns("run", "reaches base's final", "× base", "Δ loss", "Δ top-1")
                yield reach
        yield MetricGrid("runs", id="runs-grid")

    def on_mount(self) -> None:
        self.query_one("#runs-curves", LineChart).empty_text = "no evaluations yet"
        self.query_one("#runs-diff", LineChart).empty_text = "pick a baseline: ctrl+b"
        self.set_class(True, f"view-{self.view}")
        self._set_columns()
        self.refresh_runs()

    def on_resize(self) -> None:
        if self._set_columns():
            self._fill_table()
            # a terminal's resize can reach the table before its new columns have their widths:
            # filled again once laid out, cells are measured against the columns they are in
            self.call_after_refresh(self._fill_table)
        self.redraw()

    @property
    def one_view(self) -> bool:
        return self.screen.has_class("one-view")

    def _set_columns(self) -> bool:
        """The table's columns for this width (and a column of the metric it is ordered by);
        True when they changed."""
        from workbench.runs.metrics import parse_sort

        narrow = self.screen.has_class("narrow")
        metric, which = parse_sort(self.sort)
        by = f"{metric} {which}" if which else None
        if (narrow, by) == self._narrow:
            return False
        self._narrow = (narrow, by)
        table = self.query_one("#runs-table", DataTable)
        table.clear(columns=True)
        for key, header in COLUMNS:
            if not narrow or key in NARROW_COLUMNS:
                table.add_column(NARROW_HEADERS.get(key, header) if narrow else header, key=key)
            if key == "name" and by:
                table.add_column(by, key="by")
        return True

    def views(self) -> tuple[str, ...]:
        """The views ctrl+f goes through: curves and vs take turns only where the pane is narrow or
        short; the metric grid is one once metrics are picked."""
        base = VIEWS[:2] if self.is_mounted and self.one_view else VIEWS[:1]
        return base + (("panels",) if self.panels else ())

    def action_next_view(self) -> None:
        views = self.views()
        self._show_view(views[(views.index(self.view) + 1) % len(views)] if self.view in views else views[0])

    def _show_view(self, view: str) -> None:
        self.set_class(False, f"view-{self.view}")
        self.view = view
        self.set_class(True, f"view-{self.view}")
        self.redraw()

    def on_show(self) -> None:
        self.refresh_runs()

    # --- loading -------------------------------------------------------------------------

    def refresh_runs(self) -> None:
        self._load_worker()

    def runs_changed(self) -> None:
        self.refresh_runs()

    @work(thread=True, exclusive=True, group="runs-load", exit_on_error=False)
    def _load_worker(self) -> None:
        from workbench.runs.folder import summaries

        try:
            rows, curves = summaries(self.ws, curves=True)
        except OSError as e:
            rows, curves = [{"name": "?", "status": f"cannot list runs: {e.strerror}"}], {}
        self.post_message(self.Loaded(rows, curves))

    def on_runs_pane_loaded(self, msg: "RunsPane.Loaded") -> None:
        self._listed = msg.rows  # in list_runs' order
        self.run_curves = msg.curves
        self.curves = {n: c.get("val_loss", []) for n, c in msg.curves.items()}
        self.top1 = {n: c.get("top1", []) for n, c in msg.curves.items()}
        self._order()
        names = {r["name"] for r in self.rows}
        self.selected &= names
        if self.baseline not in names:
            self.baseline = None
        self._fill_table()
        self.loaded = True
        self.redraw()

    def _fill_table(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        keep = self._cursor_to or self.cursor_run  # a renamed run keeps the cursor
        self._cursor_to = None
        table.clear()
        keys = [c.key.value for c in table.ordered_columns]
        for r in self.visible_rows():
            cells = self._cells(r)
            table.add_row(*[cells[k] for k in keys], key=r["name"])
        names = [r["name"] for r in self.visible_rows()]
        if keep in names:
            table.move_cursor(row=names.index(keep))
        # where the refill leaves the cursor is not a move: the last action's message stays
        self._highlighted_run = self.cursor_run
        self._show_detail()

    def visible_rows(self) -> list[dict]:
        """The rows the filter lets through (every row without one)."""
        from workbench.runs.labels import matches

        return [r for r in self.rows if matches(self._rx, r)]

    def _show_detail(self) -> None:
        """The line above the table: the run under the cursor in full (what a narrow table has
        no room for, and why a damaged run is damaged)."""
        name = self.cursor_run
        row = next((r for r in self.rows if r["name"] == name), None)
        if row is None or not self._status_is_detail:
            return
        c = self._cells(row)
        text = (f"{name}: {c['preset']} · {c['params']} params · {si(row.get('steps'))} steps · {c['tokens']} tokens"
                f" · best val {c['val']} · {c['bpb']} bits/byte · {c['tok_s']} tok/s · {c['date']} · {c['status']}")
        if row.get("pinned"):
            text += " · pinned"
        if row.get("sort_value") is not None:
            text += f" · {self.sort.replace(':', ' ')} {row['sort_value']:.4g}"
        d = row.get("last_data_eval")
        if d:  # `eval --data`: a test split or another text
            part = f" {d['split']}" if d.get("split") in ("valid", "test") else ""
            text += f" · on {d['data']}{part}: loss {d['val_loss']:.4f}" + (
                f", {d['bpb']:.3f} bits/byte" if isinstance(d.get("bpb"), (int, float)) else "")
        if row.get("tags"):
            text += f" · tags {', '.join(row['tags'])}"
        if row.get("note"):
            text += f" · note: {row['note']}"
        if row.get("problem"):
            text += f" — {row['problem']}"
        self.set_status(text, error=bool(row.get("problem")), detail=True)

    def _mark(self, name: str) -> str:
        pinned = any(r["name"] == name and r.get("pinned") for r in self.rows)
        return (PIN if pinned else "") + ("B" if name == self.baseline else "") + \
            ("●" if name in self.selected else "")

    def _cells(self, r: dict) -> dict[str, str]:
        """One run's table cells by column key: `runs list`'s, with counts in K/M/G."""
        c = summary_cells(r, si, "—")
        v = r.get("sort_value")
        return {**c, "mark": self._mark(r["name"]), "date": c["created"].replace("T", " ")[:16],
                "by": "—" if v is None else f"{v:.4g}"}

    @property
    def cursor_run(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        except Exception:
            return None

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        run = event.row_key.value if event.row_key is not None else None
        if run != self.cursor_run:
            return  # a stale event from a refill (clearing the table put the cursor on another row first)
        if run != self._highlighted_run:  # moving on replaces the last action's message; a refill does not
            self._highlighted_run = run
            self._status_is_detail = True
        self._show_detail()
        if not self.selected:
            self._redraw_soon()  # with nothing selected the overlay follows the cursor

    # --- charts --------------------------------------------------------------------------

    def shown_runs(self) -> list[str]:
        """The runs the charts draw: the pinned ones (even where the filter hides them), the
        baseline, then the selected runs the filter shows (or the one under the cursor)."""
        names = [r["name"] for r in self.visible_rows()]
        picked = [n for n in names if n in self.selected] or ([self.cursor_run] if self.cursor_run else [])
        pinned = [r["name"] for r in self.rows if r.get("pinned")]
        shown = dict.fromkeys(pinned + ([self.baseline] if self.baseline else []) + picked)
        return list(shown)[:MAX_OVERLAY]

    def _redraw_soon(self) -> None:
        """Redraw once the cursor rests: a grid of panels takes a while to draw (plotext), and
        holding ↓ should move the cursor, not queue a redraw per row."""
        if self._redraw_timer is not None:
            self._redraw_timer.stop()
        self._redraw_timer = self.set_timer(0.1, self.redraw)

    @property
    def smooth_text(self) -> str:
        return f" · ema {self.smoothing:.2f}" if self.smoothing else ""

    def redraw(self) -> None:
        from workbench.runs.compare import compare_curves

        shown = self.shown_runs()
        if self.view == "panels":
            self._draw_grid(shown)
            return
        curves = self.query_one("#runs-curves", LineChart)
        series, log_x = curve_series(self.curves, shown, self.smoothing)
        switch = self.is_mounted and self.one_view
        curves.title = "validation loss vs tokens" + (" (log x)" if log_x else "") + self.smooth_text + \
            (" · ctrl+f: vs baseline" if switch else "")
        curves.set_series(series, xlabel="tokens (log)" if log_x else "tokens", log_x=log_x,
                          clip_outliers=self.clip_outliers)
        curves.redraw()
        diff = self.query_one("#runs-diff", LineChart)
        reach = self.query_one("#runs-reach", DataTable)
        reach.clear()
        base = self.curves.get(self.baseline or "", [])
        if not self.baseline:
            diff.title = "run − baseline"
            diff.empty_text = "pick a baseline: ctrl+b"
            diff.set_series([])
        elif not base:
            diff.title = f"run − {self.baseline}"
            diff.empty_text = "the baseline has no evaluations yet"
            diff.set_series([])
        else:
            # the numbers `workbench runs compare` prints, from the curves loaded here
            cmp = compare_curves({n: self.curves.get(n, []) for n in shown}, self.baseline,
                                 {n: self.top1.get(n, []) for n in shown})
            diff.title = f"run − {self.baseline} (val loss)"
            diff.empty_text = "select runs that overlap the baseline's tokens: space"
            diff.set_series(diff_series(cmp, shown), xlabel="tokens (log)", log_x=True, zero_line=True,
                            clip_outliers=self.clip_outliers)
            for cells in reach_rows(cmp):
                reach.add_row(*cells)
        if switch:
            diff.title += " · ctrl+f: " + ("panels" if self.panels else "curves")
        diff.redraw()

    def _draw_grid(self, shown: list[str]) -> None:
        """One small chart per picked metric, the shown runs in each (smoothed and scaled as the
        overlay is); the charts are made again only when the metrics or the columns change."""
        grid = self.query_one("#runs-grid", MetricGrid)
        if grid.set_metrics(self.panels, self.size.width or 0):
            self.call_after_refresh(self.redraw)  # the new charts are drawn once they have a size
            return
        for chart in grid.charts():
            metric = str(chart.name)
            series, log_x = curve_series({n: c.get(metric, []) for n, c in self.run_curves.items()}, shown,
                                         self.smoothing)
            chart.title = metric + (" (log x)" if log_x else "") + self.smooth_text
            chart.empty_text = "not logged by the shown runs"
            chart.set_series(series, xlabel="tokens (log)" if log_x else "tokens", log_x=log_x,
                             clip_outliers=self.clip_outliers)
            chart.redraw()

    # --- actions -------------------------------------------------------------------------

    def action_toggle_select(self) -> None:
        name = self.cursor_run
        if name is None:
            return
        self.selected ^= {name}
        self._update_mark(name)
        self.redraw()

    def action_baseline(self) -> None:
        name = self.cursor_run
        if name is None:
            return
        old, self.baseline = self.baseline, (None if self.baseline == name else name)
        for n in {old, name} - {None}:
            self._update_mark(n)
        self.set_status(f"baseline: {self.baseline}" if self.baseline else "no baseline")
        self.redraw()

    def _update_mark(self, name: str) -> None:
        table = self.query_one("#runs-table", DataTable)
        try:
            table.update_cell(name, table.ordered_columns[0].key, self._mark(name))
        except Exception:
            pass

    def action_resume(self) -> None:
        name = self.cursor_run
        if name is not None:
            self.post_message(OpenRun("train", name, "resume"))

    def action_trace(self) -> None:
        self._open_in("trace")

    def action_chat(self) -> None:
        self._open_in("chat")

    def _open_in(self, pane: str) -> None:
        name = self.cursor_run
        if name is not None:
            self.post_message(OpenRun(pane, name))

    def action_export(self) -> None:
        name = self.cursor_run
        if name is None or not self.app.trusted_or_ask([name], self.action_export):
            return
        from workbench.export import format_choices
        from workbench.tui.widgets.export_dialog import ExportScreen

        try:
            choices = format_choices(self.ws, name)
        except WorkbenchError as e:
            self.set_status(f"not exported: {e}", error=True)
            return

        def answer(a: dict | None) -> None:
            if a:
                self.set_status(f"exporting {name} as {a['format']} to {a['path']} …")
                self._export_worker(name, a)

        self.app.push_screen(ExportScreen(name, choices, str(self.ws.root / "exports" / name)), answer)

    def action_export_csv(self) -> None:
        """The shown runs' curves as CSV under exports/ (``workbench runs export-metrics``), and
        with a baseline each one's difference from it (``runs compare --csv``)."""
        from workbench.runs.compare import compare_curves
        from workbench.runs.curves_csv import compare_table, metrics_table, write_csv
        from workbench.runs.folder import get_run

        shown = {self.baseline, *self.selected} if self.selected or self.baseline else {self.cursor_run}
        names = [r["name"] for r in self.rows if r["name"] in shown]
        if not names:
            return
        stem = names[0] if len(names) == 1 else f"{names[0]}-and-{len(names) - 1}-more"
        out = self.ws.root / "exports"
        try:
            out.mkdir(parents=True, exist_ok=True)
            n = write_csv(str(out / f"{stem}-metrics.csv"), *metrics_table([get_run(self.ws, r) for r in names]))
            said = [f"{n:,} rows of {', '.join(names)} to exports/{stem}-metrics.csv"]
            others = [r for r in names if r != self.baseline]
            if self.baseline and others:
                cmp = compare_curves({r: self.curves.get(r, []) for r in names}, self.baseline,
                                     {r: self.top1.get(r, []) for r in names})
                cmp["vs_baseline"] = [row for row in cmp["vs_baseline"] if row["name"] in others]
                m = write_csv(str(out / f"{stem}-vs-{self.baseline}.csv"), *compare_table(cmp))
                said.append(f"{m:,} rows of run − {self.baseline} to exports/{stem}-vs-{self.baseline}.csv")
        except WorkbenchError as e:
            self.set_status(f"no CSV: {e}", error=True)
            return
        except OSError as e:
            self.set_status(f"no CSV: cannot write under {out}: {e.strerror}", error=True)
            return
        self.set_status("wrote " + "; ".join(said))

    @work(thread=True, group="runs-export", exit_on_error=False)
    def _export_worker(self, name: str, a: dict) -> None:
        from workbench.export import export_run

        try:
            out = export_run(self.ws, name, a["path"], a["format"], overwrite=a["overwrite"],
                             dtype=a.get("dtype"), version=a.get("version"))
            opts = "".join(f", {k} {v}" for k, v in out["options"].items())
            self.post_message(self.Exported(f"exported {name} ({out['checkpoint']}, {out['format']}{opts}) "
                                            f"to {out['path']}", False))
        except Exception as e:  # never a traceback in the user's face
            self.post_message(self.Exported(f"not exported: {user_message(e)}", True))

    def on_runs_pane_exported(self, msg: "RunsPane.Exported") -> None:
        self.set_status(msg.text, error=msg.error)

    def action_filter(self) -> None:
        from workbench.tui.widgets.prompt import PromptScreen

        def answer(text: str | None) -> None:
            if text is None:
                return  # esc: the filter stays
            from workbench.runs.labels import compile_filter

            try:
                self._rx = compile_filter(text)
            except WorkbenchError as e:
                self.set_status(str(e), error=True)
                return
            self.filter = text
            self._fill_table()
            self.redraw()
            shown = len(self.visible_rows())
            hidden = len({r["name"] for r in self.rows if r.get("pinned")} - {r["name"] for r in self.visible_rows()})
            pins = f" (and {hidden} pinned, still drawn)" if hidden else ""
            self.set_status(f"filter {text!r}: {shown} of {len(self.rows)} runs{pins}" if text else
                            "no filter: every run")

        self.app.push_screen(PromptScreen("Show the runs whose name or a tag matches (a regular expression; "
                                          "empty: every run):", self.filter, empty_ok=True), answer)

    def action_tag(self) -> None:
        name = self.cursor_run
        if name is None:
            return
        from workbench.tui.widgets.prompt import PromptScreen

        def answer(text: str | None) -> None:
            if not text:
                return
            from workbench.runs.labels import set_tags

            words = text.split()
            try:
                tags = set_tags(self.ws.run_path(name), add=[w for w in words if not w.startswith("-")],
                                remove=[w[1:] for w in words if w.startswith("-")])
            except WorkbenchError as e:
                self.set_status(f"tags not changed: {e}", error=True)
                return
            self.set_status(f"{name}: tags {', '.join(tags) or '(none)'}")
            self.refresh_runs()

        self.app.push_screen(PromptScreen(f"Tags for {name} (space-separated; -TAG removes one):"), answer)

    def action_note(self) -> None:
        name = self.cursor_run
        row = next((r for r in self.rows if r["name"] == name), None)
        if row is None:
            return
        from workbench.tui.widgets.prompt import PromptScreen

        def answer(text: str | None) -> None:
            if text is None:
                return
            from workbench.runs.labels import set_note

            try:
                set_note(self.ws.run_path(name), text)
            except WorkbenchError as e:
                self.set_status(f"note not saved: {e}", error=True)
                return
            self.set_status(f"{name}: note {'saved' if text else 'cleared'}")
            self.refresh_runs()

        self.app.push_screen(PromptScreen(f"Note on {name} (empty clears it):", row.get("note") or "",
                                          empty_ok=True), answer)

    def action_rename(self) -> None:
        name = self.cursor_run
        if name is None:
            return
        from workbench.tui.widgets.prompt import PromptScreen

        def answer(new: str | None) -> None:
            if new and new != name:
                self.rename(name, new)

        self.app.push_screen(PromptScreen(f"Rename run {name!r} to:", name), answer)

    def rename(self, name: str, new: str) -> None:
        from workbench.runs.folder import rename_run

        try:
            rename_run(self.ws, name, new)
        except WorkbenchError as e:
            self.set_status(f"not renamed: {e}", error=True)
            return
        self.selected = {new if n == name else n for n in self.selected}
        if self.baseline == name:
            self.baseline = new
        self.set_status(f"renamed {name} → {new}")
        self._cursor_to = new
        self.refresh_runs()

    def action_delete(self) -> None:
        name = self.cursor_run
        if name is None:
            return
        from workbench.tui.widgets.modals import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                self.delete(name)

        self.app.push_screen(ConfirmScreen(f"Delete run {name!r} and all its checkpoints? This cannot be undone.",
                                           "Delete", "Keep"), answer)

    def delete(self, name: str) -> None:
        from workbench.runs.folder import delete_run

        try:
            delete_run(self.ws, name)
        except WorkbenchError as e:
            self.set_status(f"not deleted: {e}", error=True)
            return
        self.selected.discard(name)
        self.set_status(f"deleted {name}")
        self.refresh_runs()

    # --- sorting and sweeps ------------------------------------------------------------

    def action_sort(self) -> None:
        from workbench.runs.metrics import describe, higher_is_better
        from workbench.tui.widgets.metric_dialogs import SortScreen

        choices = [("name", "name"), ("bpb", "best bits per byte (how a sweep ranks)")]
        for m in self.logged_metrics(every=True):
            direction = "highest" if higher_is_better(m) else "lowest"
            choices += [(f"{m}:best", f"{m}: best ({direction} first)"),
                        (f"{m}:last", f"{m}: last ({direction} first)")]

        def answer(order: str | None) -> None:
            if order is None:
                return
            self.sort = order
            self._order()
            self._fill_table()
            self.set_status(f"sorted by {describe(self.sort, self.smoothing)}")

        self.app.push_screen(SortScreen(choices, self.sort), answer)

    def _order(self) -> None:
        """``rows`` in the order asked (``runs.metrics.sort_runs``, with the charts' smoothing),
        pinned runs first; an order by a metric no run logs any more falls back to name."""
        from workbench.runs.metrics import sort_runs

        try:
            self.rows = sort_runs(self._listed, self.sort, self.run_curves, self.smoothing)
        except WorkbenchError:
            self.sort = "name"
            self.rows = sort_runs(self._listed, self.sort)
        self._set_columns()  # the column of the metric ordered by; the caller fills the table

    def logged_metrics(self, every: bool = False) -> list[str]:
        """The metrics the shown runs logged (``every``: any run), in the order they logged them."""
        names = [r["name"] for r in self.rows] if every else self.shown_runs()
        out: dict[str, None] = {}
        for n in names:
            out.update(dict.fromkeys(self.run_curves.get(n, {})))
        return list(out)

    # --- chart controls ------------------------------------------------------------------

    def action_smooth(self, direction: int) -> None:
        """Smooth the curves more (1) or less (-1): TensorBoard's slider, by keys; a metric order
        follows (it is by smoothed values)."""
        from workbench.runs.smooth import step

        self.smoothing = step(self.smoothing, direction)
        if ":" in self.sort:
            self._order()
            self._fill_table()
        self.redraw()
        self.set_status(f"smoothing {self.smoothing:.2f}" + (" (raw curves)" if not self.smoothing else
                                                                 " (the baseline comparison stays raw)"))

    def action_toggle_outliers(self) -> None:
        """Scale the charts' y-range to a quantile band (outliers on its edge, marked) or to all points."""
        self.clip_outliers = not self.clip_outliers
        self.redraw()
        self.set_status("charts: " + ("outliers ignored in the y-range (marked ▲/▼ on its edge)"
                                      if self.clip_outliers else "the y-range holds every point"))

    def action_panels(self) -> None:
        from workbench.tui.widgets.metric_dialogs import PanelsScreen

        shown = self.shown_runs()
        metrics = self.logged_metrics() or self.logged_metrics(every=True)
        if not metrics:
            self.set_status("the shown runs logged no metrics yet", error=True)
            return

        def note(m: str) -> str:
            points = [len(self.run_curves.get(n, {}).get(m, [])) for n in shown]
            logged = [p for p in points if p]
            return f"{len(logged)} of {len(shown)} shown runs, up to {max(logged, default=0)} points"

        def answer(picked: list[str] | None) -> None:
            if picked is None:
                return
            self.panels = picked
            self.app.refresh_bindings()
            self._show_view("panels" if picked else VIEWS[0])
            self.set_status(f"panels: {', '.join(picked)}" if picked else "no panels: the curves")

        self.app.push_screen(PanelsScreen([(m, note(m)) for m in metrics], self.panels), answer)

    def action_pin(self) -> None:
        name = self.cursor_run
        row = next((r for r in self.rows if r["name"] == name), None)
        if row is None:
            return
        from workbench.runs.labels import set_pinned

        try:
            pinned = set_pinned(self.ws.run_path(name), not row.get("pinned"))
        except WorkbenchError as e:
            self.set_status(f"not pinned: {e}", error=True)
            return
        except OSError as e:
            self.set_status(f"not pinned: cannot write in {self.ws.run_path(name)}: {e.strerror}", error=True)
            return
        self.set_status(f"{name}: {'pinned (listed first, always drawn)' if pinned else 'unpinned'}")
        self._cursor_to = name
        self.refresh_runs()

    def form_changed(self, config, error: str) -> None:
        self._form = config

    def action_sweep(self) -> None:
        if self.sweeping:
            self.set_status(f"sweep {self.sweeping} is running; ctrl+g stops it", error=True)
            return
        from workbench.tui.widgets.sweep_dialog import SweepScreen

        self.app.push_screen(SweepScreen.for_workspace(self.ws, self._form),
                             lambda req: req is not None and self._start_sweep(req))

    def _start_sweep(self, req) -> None:
        from workbench.planning.sweep import SweepJob

        self.sweep_job = SweepJob(self.ws, req).start()
        self._sweep_shown = False
        self.set_status(f"sweep {req.name}: starting …")
        self.app.refresh_bindings()
        self._sweep_timer = self.set_interval(0.5, self._follow_sweep)

    @property
    def sweeping(self) -> str | None:
        """The name of the sweep running here, if one is (until its outcome is shown)."""
        job = self.sweep_job
        return job.req.name if job is not None and not self._sweep_shown else None

    def _follow_sweep(self) -> None:
        job = self.sweep_job
        said = job.drain()
        if said:
            self.set_status(said[-1])
            self.refresh_runs()  # a run started or finished
        if job.finished:
            self._sweep_timer.stop()
            self._sweep_shown = True
            self.set_status(job.line, error=job.error)
            self.sort = "bpb"  # the ranking, as the sweep printed it
            self.refresh_runs()
            self.app.refresh_bindings()

    def action_stop_sweep(self) -> None:
        if self.sweeping:
            self.sweep_job.cancel()
            self.set_status(f"stopping sweep {self.sweeping} (each run keeps a checkpoint) …")

    def busy_text(self) -> str | None:
        return f"Sweep {self.sweeping} is running (its runs stop with a checkpoint)" if self.sweeping else None

    async def shutdown(self) -> None:
        if self.sweep_job is not None and not self.sweep_job.finished:
            import asyncio

            self.sweep_job.cancel()
            await asyncio.to_thread(self.sweep_job.join)

    def check_pane_action(self, action: str) -> bool | None:
        action = action.split("(")[0]  # smooth(1) is smooth
        if action == "stop_sweep":
            return bool(self.sweeping)
        if action == "sweep":
            return None if self.sweeping else True
        if action in ("resume", "trace", "chat", "export", "export_csv", "rename", "delete", "toggle_select",
                      "baseline", "sort", "tag", "note", "pin", "panels", "smooth", "toggle_outliers"):
            return True if self.rows else None
        if action == "next_view":
            return len(self.views()) > 1
        return True

    def set_status(self, text: str, error: bool = False, detail: bool = False) -> None:
        """A message about the last action (kept until the cursor moves), or the detail line."""
        self._status_is_detail = detail
        self.show_line("runs-status", text, error=error, escape=True)
