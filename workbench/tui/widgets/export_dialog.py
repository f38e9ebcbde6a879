"""The export dialog of the Runs pane: a folder, a format (every one, with the reason where the
run's config rules one out), the format's option, and whether to replace an earlier export.

It only asks; the pane passes the answer to the engine's ``export_run``. The choices come from
``export.format_choices`` so the dialog never decides on its own what a format can hold.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet, Select, Static
from workbench.tui.widgets.form_fields import FormCheckbox, FormInput, FormSelect

OPTIONS = {  # format -> (option key, label, choices; the first is the default)
    "gguf": ("dtype", "dtype", ("f32", "f16", "q8_0")),
    "llama2c": ("version", "version", (0, 1)),
}


class ExportScreen(ModalScreen["dict | None"]):
    """enter in the folder box (or ctrl+e anywhere) exports; esc cancels (None).

    The answer is ``{"path", "format", "overwrite", **options}``."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="export.cancel"),
        Binding("ctrl+e", "submit", "Export", id="export.submit"),
    ]

    def __init__(self, run: str, choices: list[dict], folder: str):
        super().__init__()
        self.run, self.choices, self.folder = run, choices, folder
        allowed = [c["format"] for c in choices if not c["why_not"]]
        self.format = allowed[0] if allowed else None
        self._auto_path = self._path_for(self.format)

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Static(f"Export run {self.run!r}", id="export-title", markup=False)
            with RadioSet(id="export-format"):
                for c in self.choices:
                    yield RadioButton(f"{c['format']:<8} {c['summary']}", value=c["format"] == self.format,
                                      disabled=bool(c["why_not"]), name=c["format"])
            yield Static(self._reasons(), id="export-why", markup=False)
            for fmt, (key, label, values) in OPTIONS.items():
                with Horizontal(id=f"export-{key}-row", classes="export-option-row"):
                    yield Label(label, classes="export-option-label")
                    yield FormSelect([(str(v), v) for v in values], value=values[0], id=f"export-{key}",
                                 allow_blank=False, compact=True, classes="export-option")
            yield Label("to folder", classes="export-label")
            yield FormInput(self._auto_path, id="export-path", compact=True)
            yield FormCheckbox("replace an earlier export in that folder", id="export-overwrite", compact=True)
            yield Static("enter: export · ↑/↓ in the list, then space: pick a format · esc: cancel",
                         id="export-hint")

    def on_mount(self) -> None:
        self.query_one("#export-why").display = any(c["why_not"] for c in self.choices)
        self._show_option()
        self.query_one("#export-path", Input).focus()

    def _reasons(self) -> str:
        lines = [f"{c['format']}: not possible — {c['why_not']}" for c in self.choices if c["why_not"]]
        return "\n".join(lines)

    def _path_for(self, fmt: str | None) -> str:
        return f"{self.folder}-{fmt}" if fmt else self.folder

    def _show_option(self) -> None:
        for fmt, (key, _, _) in OPTIONS.items():
            self.query_one(f"#export-{key}-row").display = fmt == self.format

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.format = event.pressed.name
        path = self.query_one("#export-path", Input)
        if path.value == self._auto_path:  # follow the format unless the user typed a folder
            self._auto_path = path.value = self._path_for(self.format)
        self._show_option()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_submit(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        if not path or self.format is None:
            return
        answer = {"path": path, "format": self.format,
                  "overwrite": self.query_one("#export-overwrite", Checkbox).value}
        spec = OPTIONS.get(self.format)
        if spec is not None:
            answer[spec[0]] = self.query_one(f"#export-{spec[0]}", Select).value
        self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(None)
