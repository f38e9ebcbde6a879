"""The workbench app: six panes in tabs, a Footer, a help screen, themes, and a clean quit.

``run(ws)`` is what ``workbench`` with no subcommand calls. Heavy imports (torch,
sentencepiece, datasets) happen only in the panes' workers or on first use, so the app
paints in about a second.
"""

from __future__ import annotations

from typing import Iterable

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import TabbedContent, TabPane, Tabs

from workbench.workspace import Workspace
from workbench.tui.panes.base import FormChanged, OpenRun, Pane, RunsChanged
from workbench.tui.panes.tokenizer import TokenizerPane
from workbench.machine.sysinfo import SystemProbe
from workbench.tui.widgets.footer import WrappingFooter
from workbench.tui.widgets.modals import ConfirmScreen, HelpScreen

PANES = (("tokenizer", "Tokenizer"), ("config", "Config"), ("train", "Train"),
         ("trace", "Trace"), ("chat", "Chat"), ("runs", "Runs"))
NARROW_WIDTH = 110  # below this the two-column panes stack
SHORT_HEIGHT = 32  # below this (or NARROW_WIDTH) panes with several views show one at a time
PANES_GROUP = Binding.Group("panes", compact=True)
SMOOTH_GROUP = Binding.Group("smooth", compact=True)


class WorkbenchApp(App):
    """From raw text to a model you can talk to."""

    CSS_PATH = "app.tcss"
    TITLE = "workbench"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("question_mark", "help", "Help", id="app.help", key_display="?"),
        Binding("f2", "change_theme", "Theme", id="app.theme", show=False),
        # before focus_tabs: while a reply streams, esc stops it
        Binding("escape", "pane('chat', 'stop')", "Stop", id="chat.stop"),
        Binding("escape", "focus_tabs", "Tabs", id="app.focus_tabs"),
        *[Binding(str(i + 1), f"show_pane('{key}')", title, id=f"app.pane.{key}",
                  group=PANES_GROUP) for i, (key, title) in enumerate(PANES)],
        # Pane actions live here (not on the panes) so the Footer shows them whatever has
        # focus; check_action hides those of the other panes.
        Binding("ctrl+b", "pane('tokenizer', 'build')", "Build", id="tokenizer.build"),
        Binding("ctrl+g", "pane('tokenizer', 'cancel_build')", "Cancel", id="tokenizer.cancel"),
        Binding("ctrl+o", "pane('tokenizer', 'browse')", "Browse", id="tokenizer.browse"),
        Binding("ctrl+s", "pane('config', 'save')", "Save as", id="config.save"),
        Binding("ctrl+l", "pane('config', 'focus_load')", "Load", id="config.load"),
        Binding("ctrl+b", "pane('config', 'plan')", "Plan", id="config.plan"),
        Binding("ctrl+r", "pane('config', 'reload_experiments')", "Reload experiments", id="config.reload"),
        Binding("ctrl+r", "pane('train', 'start')", "Start", id="train.start"),
        Binding("ctrl+t", "pane('train', 'pause')", "Pause", id="train.pause"),
        Binding("ctrl+t", "pane('train', 'unpause')", "Resume", id="train.unpause"),
        Binding("ctrl+g", "pane('train', 'stop')", "Stop", id="train.stop"),
        Binding("ctrl+y", "pane('train', 'toggle_log_y')", "Log y", id="train.log_y"),
        Binding("ctrl+n", "pane('train', 'next_x_axis')", "X axis", id="train.x_axis"),
        Binding("ctrl+f", "pane('train', 'next_view')", "View", id="train.view"),
        Binding("greater_than_sign", "pane('train', 'smooth(1)')", "Smoother", id="train.smooth_more",
                key_display=">"),
        Binding("less_than_sign", "pane('train', 'smooth(-1)')", "Rougher", id="train.smooth_less",
                key_display="<"),
        Binding("o", "pane('train', 'toggle_outliers')", "Outliers", id="train.outliers"),
        Binding("h", "pane('train', 'next_health')", "Health", id="train.health"),
        Binding("m", "pane('train', 'panels')", "Panels", id="train.panels"),
        Binding("space", "pane('runs', 'toggle_select')", "Select", id="runs.select"),
        Binding("ctrl+b", "pane('runs', 'baseline')", "Baseline", id="runs.baseline"),
        Binding("ctrl+r", "pane('runs', 'resume')", "Resume", id="runs.resume"),
        Binding("ctrl+t", "pane('runs', 'trace')", "Trace", id="runs.trace"),
        Binding("ctrl+o", "pane('runs', 'chat')", "Chat", id="runs.chat"),
        Binding("ctrl+e", "pane('runs', 'export')", "Export", id="runs.export"),
        Binding("ctrl+x", "pane('runs', 'export_csv')", "CSV", id="runs.csv"),
        Binding("slash", "pane('runs', 'filter')", "Filter", id="runs.filter", key_display="/"),
        Binding("t", "pane('runs', 'tag')", "Tags", id="runs.tag"),
        Binding("n", "pane('runs', 'note')", "Note", id="runs.note"),
        Binding("ctrl+n", "pane('runs', 'rename')", "Rename", id="runs.rename"),
        Binding("ctrl+d", "pane('runs', 'delete')", "Delete", id="runs.delete"),
        Binding("ctrl+f", "pane('runs', 'next_view')", "View", id="runs.view"),
        Binding("ctrl+s", "pane('runs', 'sort')", "Sort", id="runs.sort"),
        Binding("p", "pane('runs', 'pin')", "Pin", id="runs.pin"),
        Binding("m", "pane('runs', 'panels')", "Panels", id="runs.panels"),
        # one Footer entry ">< smooth": the Runs pane's keys fill three Footer lines at 80 columns
        Binding("greater_than_sign", "pane('runs', 'smooth(1)')", "Smoother", id="runs.smooth_more",
                key_display=">", group=SMOOTH_GROUP),
        Binding("less_than_sign", "pane('runs', 'smooth(-1)')", "Rougher", id="runs.smooth_less",
                key_display="<", group=SMOOTH_GROUP),
        Binding("o", "pane('runs', 'toggle_outliers')", "Outliers", id="runs.outliers"),
        Binding("ctrl+w", "pane('runs', 'sweep')", "Sweep", id="runs.sweep"),
        Binding("ctrl+g", "pane('runs', 'stop_sweep')", "Stop sweep", id="runs.stop_sweep"),
        Binding("ctrl+g", "pane('trace', 'trace')", "Trace", id="trace.run"),
        Binding("left_square_bracket", "pane('trace', 'head_prev')", "Head-", id="trace.head_prev",
                key_display="["),
        Binding("right_square_bracket", "pane('trace', 'head_next')", "Head+", id="trace.head_next",
                key_display="]"),
        Binding("ctrl+b", "pane('trace', 'pin')", "Pin for diff", id="trace.pin"),
        Binding("ctrl+s", "pane('trace', 'save')", "Save", id="trace.save"),
        Binding("ctrl+g", "pane('chat', 'generate')", "Generate", id="chat.generate"),
        Binding("ctrl+r", "pane('chat', 'regenerate')", "Regenerate", id="chat.regenerate"),
        Binding("ctrl+t", "pane('chat', 'probs')", "Probs", id="chat.probs"),
        Binding("ctrl+o", "pane('chat', 'copy')", "Copy", id="chat.copy"),
        Binding("ctrl+l", "pane('chat', 'clear')", "Clear", id="chat.clear"),
    ]

    def __init__(self, ws: Workspace, probe=None, theme: str | None = None):
        super().__init__()
        self.ws = ws
        self.probe = probe or SystemProbe()
        # every pane made so far, by key: the App routes to them (and reaches them on the way
        # out, when queries no longer find unmounted widgets)
        self.panes: dict[str, Pane] = {}
        self._form: tuple | None = None  # the Config pane's form, as it last said
        if theme:
            self.theme = theme

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="tokenizer", id="panes"):
            for i, (key, title) in enumerate(PANES):
                with TabPane(f"{i + 1} {title}", id=key):
                    if key == "tokenizer":
                        yield self._make_pane(key)
        yield WrappingFooter()

    def _make_pane(self, key: str) -> Pane:
        # the other panes' modules (and plotext, and the engine behind them) are imported after
        # the first paint: the app opens faster
        if key == "tokenizer":
            made: Pane = TokenizerPane(self.ws, id="tokenizer-pane")
        elif key == "config":
            from workbench.tui.panes.config import ConfigPane
            made = ConfigPane(self.ws, self.probe, id="config-pane")
        elif key == "train":
            from workbench.tui.panes.train import TrainPane
            made = TrainPane(self.ws, self.probe, id="train-pane")
        elif key == "runs":
            from workbench.tui.panes.runs import RunsPane
            made = RunsPane(self.ws, id="runs-pane")
        elif key == "trace":
            from workbench.tui.panes.trace import TracePane
            made = TracePane(self.ws, self.probe, id="trace-pane")
        else:
            from workbench.tui.panes.chat import ChatPane
            made = ChatPane(self.ws, self.probe, id="chat-pane")
        if self._form is not None:
            made.form_changed(*self._form)  # a pane made after the Config pane spoke hears it too
        self.panes[key] = made
        return made

    def _mount_hidden_panes(self) -> None:
        for key, _ in PANES:
            if key not in self.panes:
                self.query_one(f"#{key}", TabPane).mount(self._make_pane(key))

    def on_mount(self) -> None:
        self.sub_title = str(self.ws.root)
        self._apply_size(self.size.width, self.size.height)
        self.call_after_refresh(self._mount_hidden_panes)

    def on_resize(self, event) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        screen = self.screen_stack[0] if self.screen_stack else self.screen
        screen.set_class(width < NARROW_WIDTH, "narrow")
        screen.set_class(width < NARROW_WIDTH or height < SHORT_HEIGHT, "one-view")
        self.refresh_bindings()  # the View keys show only where views take turns

    # --- panes ---------------------------------------------------------------------------

    def action_show_pane(self, key: str) -> None:
        # Move focus to the tabs first: when the focused widget's pane is hidden, Textual hands
        # focus to a focusable sibling inside that hidden pane, and the pane comes straight back.
        if self.active_pane != key and not isinstance(self.focused, Tabs):
            self.action_focus_tabs()
        self.query_one("#panes", TabbedContent).active = key

    @property
    def active_pane(self) -> str:
        return str(self.query_one("#panes", TabbedContent).active)

    async def action_pane(self, pane: str, action: str) -> None:
        target = self.panes.get(pane)
        if target is not None and target.is_mounted:
            await self.run_action(action, target)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "pane" and parameters:
            if parameters[0] != self.active_pane or not isinstance(self.screen, Screen) \
                    or self.screen is not self.screen_stack[0]:
                return False
            # a pane says which of its actions apply now (e.g. Pause vs Resume)
            target = self.panes.get(parameters[0])
            if len(parameters) > 1 and target is not None and target.is_mounted:
                return target.check_pane_action(parameters[1])
        return True

    @on(TabbedContent.TabActivated, "#panes")
    def _pane_changed(self) -> None:
        self.refresh_bindings()

    def trusted_or_ask(self, runs: list[str], retry) -> bool:
        """Whether the experiment code of every run in ``runs`` may run. A run made in another
        workspace asks first, showing its files; after a yes that run's code may run for the
        rest of this session and ``retry`` is called; after a no nothing runs."""
        from workbench.runs.folder import untrusted_files

        for name in runs:
            files = untrusted_files(self.ws, name)
            if files:
                self.push_screen(ConfirmScreen(
                    f"Run {name!r} holds experiment code made in another workspace. Read it: letting it run "
                    f"executes it here, with your permissions (for this session; `--trust-code` on the "
                    f"command line).", "Let it run", "Don't", detail=code_view(files)),
                    lambda yes: self._trust_answer(name, files, yes, retry))
                return False
        return True

    def _trust_answer(self, name: str, files: list, yes: bool, retry) -> None:
        from workbench.runs.code import trust_run

        if not yes:
            self.notify(f"run {name!r}: its experiment code was not run", severity="warning")
            return
        trust_run(files[0].parent.parent)
        retry()

    def on_open_run(self, msg: OpenRun) -> None:
        """A pane asked to show a run in another (the Runs pane: trace, chat, resume)."""
        if not self.trusted_or_ask([msg.run], lambda: self.on_open_run(msg)):
            return
        target = self.panes.get(msg.pane)
        if target is None or not target.is_mounted:
            self.notify(f"the {msg.pane} pane is not ready yet; try again in a moment", severity="warning")
            return
        self.action_show_pane(msg.pane)
        target.open_run(msg.run, msg.purpose)

    def on_form_changed(self, msg: FormChanged) -> None:
        self._form = (msg.config, msg.error)
        for pane in self.panes.values():
            pane.form_changed(msg.config, msg.error)

    def on_runs_changed(self, msg: RunsChanged) -> None:
        for pane in self.panes.values():
            if pane.is_mounted:
                pane.runs_changed()

    def action_focus_tabs(self) -> None:
        self.query_one("#panes", TabbedContent).query_one(Tabs).focus()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for i, (key, title) in enumerate(PANES):
            yield SystemCommand(f"Go to {title}", f"Show the {title} pane (key {i + 1})",
                                lambda key=key: self.action_show_pane(key))
        yield SystemCommand("Help", "Every key the app answers (key ?)", self.action_help)
        yield SystemCommand("Build tokenizer", "Build with the settings in the Tokenizer pane",
                            self._palette_build)
        yield SystemCommand("Save config", "Save the Config pane's form as models/<name>.yaml",
                            self._palette_save)

    async def _palette_build(self) -> None:
        self.action_show_pane("tokenizer")
        await self.action_pane("tokenizer", "build")

    async def _palette_save(self) -> None:
        self.action_show_pane("config")
        await self.action_pane("config", "save")

    # --- quitting ------------------------------------------------------------------------

    async def action_quit(self) -> None:
        busy = [text for pane in self.panes.values() if (text := pane.busy_text())]
        if not busy:
            self.exit(0)
            return

        async def answer(yes: bool | None) -> None:
            if yes:
                self.notify("stopping …")
                await self._shutdown_panes()
                self.exit(0)

        question = ". ".join(busy) + (". Stop it and quit?" if len(busy) == 1 else ". Stop them and quit?")
        await self.push_screen(ConfirmScreen(question, "Stop and quit", "Keep working"), answer)

    async def _shutdown_panes(self) -> None:
        for pane in list(self.panes.values()):
            await pane.shutdown()

    async def on_unmount(self) -> None:
        # However the app ends, nothing it started outlives it: every pane stops its work
        # (training keeps a checkpoint) without touching its widgets, which are gone by now.
        await self._shutdown_panes()


def run(ws: Workspace) -> int:
    app = WorkbenchApp(ws)
    app.run()
    return app.return_code or 0


def code_view(files) -> "object":
    """The text of experiment files, highlighted, each under its path (for reading before a yes)."""
    from rich.console import Group
    from rich.syntax import Syntax
    from rich.text import Text

    parts = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            text = f"# cannot read it: {e.strerror}"
        parts += [Text(str(path), style="bold"), Syntax(text, "python", line_numbers=True, word_wrap=True)]
    return Group(*parts)
