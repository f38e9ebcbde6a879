"""A one-line question with a text answer (rename a run, choose an export folder)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static
from workbench.tui.widgets.form_fields import FormInput


class PromptScreen(ModalScreen["str | None"]):
    """enter answers with the text; esc cancels (None). An empty answer is None too, unless
    ``empty_ok`` (then it is ``""``: clearing a filter or a note)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, question: str, value: str = "", hint: str = "", empty_ok: bool = False):
        super().__init__()
        self.question, self.value, self.hint, self.empty_ok = question, value, hint, empty_ok

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Static(self.question, id="prompt-question", markup=False)
            yield FormInput(self.value, id="prompt-input", compact=True)
            yield Static(self.hint or "enter: OK · esc: cancel", id="prompt-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or ("" if self.empty_ok else None))

    def action_cancel(self) -> None:
        self.dismiss(None)
