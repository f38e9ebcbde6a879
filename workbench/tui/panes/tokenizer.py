"""The Tokenizer pane: build a char-pair BPE tokenizer with progress and cancel, list the
built ones, and look at one (try it, vocabulary, bytes/token chart).

The build runs in ``BuildJob``'s child process; a thread worker polls it and posts
``BuildUpdate`` messages, so no widget is touched off the UI thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import (
    Button, DataTable, Input, Label, ProgressBar, Static, Switch, TabbedContent, TabPane,
)

from workbench.data.sources import DEFAULT_HUB_ID
from workbench.tui.panes.base import Pane
from workbench.errors import Cancelled, WorkbenchError, user_message
from workbench.tokenizer.tokenizer import TokenizerSettings, list_tokenizers
from workbench.tokenizer.build import build_request, default_name
from workbench.procs import ensure_resource_tracker
from workbench.tui.widgets.form_fields import FormInput, FormSwitch, SettingValidator
from workbench.tui.widgets.modals import PathPicker
from workbench.tui.widgets.tokenizer_views import TryIt, VocabBrowser, stats_cells

DEFAULT_VOCAB = 512
DEFAULT_SAMPLE_MB = 10.0


class TokenizerPane(Pane):
    """Build, list and inspect tokenizers."""

    ACTIONS = {"tok-build": "build", "tok-cancel": "cancel_build", "tok-browse": "browse",
               **{f"tok-{f}": "build" for f in ("data", "name", "vocab", "sample")}}

    class BuildUpdate(Message):
        """A batch of build events from the worker (the last progress one is enough)."""

        def __init__(self, kind: str, phase: str = "", done: float = 0, total=None,
                     message: str = "", name: str = ""):
            super().__init__()
            self.kind, self.phase, self.done, self.total = kind, phase, done, total
            self.message, self.name = message, name

    def __init__(self, ws, **kw):
        super().__init__(**kw)
        self.ws = ws
        self.building = False
        self._cancel = threading.Event()
        self._worker = None
        self.infos = []
        self.tokenizer = None
        self._shown_name = None

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="tok-columns"):
            with VerticalScroll(id="tok-left", can_focus=False):
                yield Label("Build a tokenizer", classes="section-title")
                with Horizontal(classes="form-row"):
                    yield Label("data", classes="field-label")
                    yield FormInput(DEFAULT_HUB_ID, id="tok-data", compact=True,
                                placeholder="hub id or local file/folder")
                    yield Button("Browse", id="tok-browse", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("name", classes="field-label")
                    yield FormInput("", id="tok-name", compact=True,
                                placeholder=default_name(DEFAULT_HUB_ID, DEFAULT_VOCAB))
                with Horizontal(classes="form-row"):
                    yield Label("vocab size", classes="field-label")
                    yield FormInput(str(DEFAULT_VOCAB), id="tok-vocab", compact=True, type="integer",
                                validators=[SettingValidator("vocab_size")])
                with Horizontal(classes="form-row"):
                    yield Label("sample MB", classes="field-label")
                    yield FormInput(str(DEFAULT_SAMPLE_MB), id="tok-sample", compact=True,
                                type="number", validators=[SettingValidator("sample_mb")])
                with Horizontal(classes="form-row"):
                    yield Label("byte fallback", classes="field-label")
                    yield FormSwitch(True, id="tok-bytefb")
                    yield Label("", id="tok-bytefb-hint", classes="hint")
                with Horizontal(classes="form-row buttons"):
                    yield Button("Build", id="tok-build", variant="primary", compact=True)
                    yield Button("Cancel", id="tok-cancel", variant="error", compact=True,
                                 disabled=True)
                yield ProgressBar(id="tok-progress", show_eta=False)
                yield Static("", id="tok-status")
                yield Static("", id="tok-error", classes="error")
                yield Label("Built tokenizers", classes="section-title")
                table = DataTable(id="tok-table", cursor_type="row", zebra_stripes=True)
                table.add_columns("name", "vocab", "alphabet", "bytes/tok", "build s")
                yield table
            with TabbedContent(id="tok-views"):
                with TabPane("Try it", id="tok-try"):
                    yield TryIt(id="try-it")
                with TabPane("Vocabulary", id="tok-vocab-tab"):
                    yield VocabBrowser(id="vocab-browser")
                yield TabPane("Chart", id="tok-chart-tab")  # its chart comes after the first paint

    def on_mount(self) -> None:
        self._update_bytefb_hint(True)
        self.query_one("#tok-progress", ProgressBar).display = False
        self._set_status("")
        self.show_error("")
        self.refresh_tokenizers()
        self.call_after_refresh(self._mount_chart)

    def _mount_chart(self) -> None:
        from workbench.tui.widgets.bpt_chart import BytesPerTokenChart

        chart = BytesPerTokenChart(id="tok-chart")
        self.query_one("#tok-chart-tab", TabPane).mount(chart)
        chart.show(self.infos)

    # --- the list of built tokenizers ----------------------------------------------------

    def refresh_tokenizers(self, select: str | None = None) -> None:
        try:
            self.infos = list_tokenizers(self.ws)
        except WorkbenchError as e:
            self.infos = []
            self.show_error(str(e))
        table = self.query_one("#tok-table", DataTable)
        table.clear()
        for info in self.infos:
            table.add_row(info.name, *stats_cells(info.stats), key=info.name)
        for chart in self.query("#tok-chart"):  # mounted after the first paint
            chart.show(self.infos)
        names = [i.name for i in self.infos]
        target = select if select in names else (self._shown_name if self._shown_name in names
                                                  else (names[0] if names else None))
        if target is not None:
            table.move_cursor(row=names.index(target))
        self.show_tokenizer(target)

    @on(DataTable.RowHighlighted, "#tok-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self._shown_name:
            self.show_tokenizer(event.row_key.value)

    def show_tokenizer(self, name: str | None) -> None:
        from workbench.tokenizer.tokenizer import load_tokenizer

        self._shown_name = name
        tok = None
        if name is not None:
            try:
                tok = load_tokenizer(self.ws, name)
            except WorkbenchError as e:
                self.show_error(str(e))
        self.tokenizer = tok
        self.query_one(TryIt).set_tokenizer(tok)
        self.query_one(VocabBrowser).set_tokenizer(tok)
        views = self.query_one("#tok-views", TabbedContent)
        views.get_tab("tok-try").label = f"Try it: {name}" if name else "Try it"

    # --- building ------------------------------------------------------------------------

    def settings(self) -> tuple[str, TokenizerSettings]:
        """The build request from the form; raises WorkbenchError naming the bad field."""
        form = {f: self.query_one(f"#tok-{f}", Input).value for f in ("data", "vocab", "sample", "name")}
        return build_request(form["data"], form["vocab"], form["sample"],
                             self.query_one("#tok-bytefb", Switch).value, form["name"])

    def action_build(self) -> None:
        if self.building:
            self.notify("a build is already running", severity="warning")
            return
        self.show_error("")
        try:
            name, settings = self.settings()
        except WorkbenchError as e:
            self.show_error(str(e))
            return
        ensure_resource_tracker()
        self._set_building(True)
        self._cancel = threading.Event()
        self._set_status(f"starting {name} …")
        self._worker = self._build_worker(name, settings, self._cancel)

    @work(thread=True, exclusive=True, group="tokenizer-build", exit_on_error=False)
    def _build_worker(self, name: str, settings: TokenizerSettings, cancel: threading.Event) -> None:
        from workbench.tokenizer.build import BuildJob

        def progress(e) -> None:
            if e.kind == "progress":
                self.post_message(self.BuildUpdate("progress", e.phase, e.done, e.total, e.message, name))

        try:
            # checking the source first may touch the network: in the worker too
            BuildJob(self.ws, name, settings).wait(progress, cancel)
            update = self.BuildUpdate("done", name=name)
        except Cancelled:
            update = self.BuildUpdate("cancelled", name=name)
        except Exception as e:  # never a traceback in the user's face
            update = self.BuildUpdate("error", message=user_message(e), name=name)
        self.post_message(update)

    def on_tokenizer_pane_build_update(self, msg: "TokenizerPane.BuildUpdate") -> None:
        bar = self.query_one("#tok-progress", ProgressBar)
        if msg.kind == "progress":
            bar.update(total=msg.total if msg.total else None, progress=msg.done)
            self._set_status(f"{msg.name}: {msg.phase} — {msg.message}")
            return
        self._set_building(False)
        if msg.kind == "done":
            self._set_status(f"built {msg.name}")
            self.refresh_tokenizers(select=msg.name)
            self.query_one("#tok-table", DataTable).focus()
        elif msg.kind == "cancelled":
            self._set_status(f"cancelled {msg.name}; nothing was written")
        else:
            self._set_status("")
            self.show_error(msg.message)

    def action_cancel_build(self) -> None:
        if self.building:
            self._cancel.set()
            self._set_status("cancelling …")

    def busy_text(self) -> str | None:
        return "A tokenizer build is running" if self.building else None

    def check_pane_action(self, action: str) -> bool | None:
        if action == "cancel_build":
            return self.building
        if action == "build":
            return None if self.building else True  # shown, greyed out, while building
        return True

    async def shutdown(self) -> None:
        if self.building:
            await self.stop_build()

    async def stop_build(self) -> None:
        """Cancel a running build and wait until its process is gone (no process outlives the app)."""
        self._cancel.set()
        if self._worker is not None:
            try:
                await self._worker.wait()
            except Exception:
                pass

    def _set_building(self, on: bool) -> None:
        self.building = on
        self.app.refresh_bindings()
        self.query_one("#tok-build", Button).disabled = on
        self.query_one("#tok-cancel", Button).disabled = not on
        bar = self.query_one("#tok-progress", ProgressBar)
        bar.display = on
        if on:
            bar.update(total=None, progress=0)

    def _set_status(self, text: str) -> None:
        box = self.query_one("#tok-status", Static)
        box.update(text)
        box.display = bool(text)

    def show_error(self, text: str) -> None:
        self.show_line("tok-error", text, error=True, hide_empty=True)

    # --- small handlers ------------------------------------------------------------------

    @on(Input.Changed, "#tok-data, #tok-vocab")
    def _update_name_hint(self) -> None:
        data = self.query_one("#tok-data", Input).value.strip()
        try:
            vocab = int(self.query_one("#tok-vocab", Input).value)
        except ValueError:
            vocab = DEFAULT_VOCAB
        self.query_one("#tok-name", Input).placeholder = default_name(data, vocab)

    @on(Switch.Changed, "#tok-bytefb")
    def _bytefb_changed(self, event: Switch.Changed) -> None:
        self._update_bytefb_hint(event.value)

    def _update_bytefb_hint(self, on: bool) -> None:
        self.query_one("#tok-bytefb-hint", Label).update(
            "lossless: unseen chars become bytes" if on
            else "unseen chars become <unk>")

    def action_browse(self) -> None:
        current = Path(self.query_one("#tok-data", Input).value.strip() or ".").expanduser()
        start = current if current.is_dir() else (current.parent if current.parent.is_dir() else self.ws.root)

        def picked(path: str | None) -> None:
            if path:
                field = self.query_one("#tok-data", Input)
                field.value = path
                field.focus()

        self.app.push_screen(PathPicker(start.resolve()), picked)
