"""The pane protocol: what the App asks of every pane, and the messages panes send each other
through it.

Panes never reach into each other. A pane that wants another to act posts a message (a run to
open in another pane, the Config pane's form having changed); the App routes it to the pane
concerned through the methods below, which every pane inherits and overrides as it needs.
"""

from __future__ import annotations

from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Input, Static


class OpenRun(Message):
    """Show pane ``pane`` with run ``run`` in it: ``purpose`` "open" (trace it, chat with it) or
    "resume" (the Train pane, ready to train on)."""

    def __init__(self, pane: str, run: str, purpose: str = "open"):
        super().__init__()
        self.pane, self.run, self.purpose = pane, run, purpose


class FormChanged(Message):
    """The Config pane's form as a config (None while a value is invalid, with ``error``)."""

    def __init__(self, config, error: str):
        super().__init__()
        self.config, self.error = config, error


class RunsChanged(Message):
    """A run was made, trained on or finished: panes that list runs read them again."""


class Pane(Vertical):
    """A pane of the app. The defaults suit a pane with no long work and no runs to open."""

    # what pressing a button or Enter in an input of the pane does: widget id -> action name
    ACTIONS: dict[str, str] = {}

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        await self._act(event.button.id)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        await self._act(event.input.id)

    async def _act(self, widget_id: str | None) -> None:
        action = self.ACTIONS.get(widget_id or "")
        if action is not None:  # the pane's own action, as its key runs it (Textual's dispatch)
            await self.app.run_action(action, self)

    def show_line(self, box_id: str, text: str, error: bool = False, hide_empty: bool = False,
                  escape: bool = False) -> None:
        """Put ``text`` in the pane's status or error line ``#box_id`` (one helper for every
        pane): marked as an error, hidden while empty, its markup escaped, as asked."""
        box = self.query_one(f"#{box_id}", Static)
        if escape:
            from rich.markup import escape as escape_markup

            text = escape_markup(text)
        box.update(text)
        box.set_class(error, "error")
        if hide_empty:
            box.display = bool(text)

    def busy_text(self) -> str | None:
        """What long work runs now, in a few words for the quit question ("Training is
        running"), or None. The App asks before quitting and calls ``shutdown`` if told to."""
        return None

    async def shutdown(self) -> None:
        """Stop whatever runs and wait for it (a training run keeps a checkpoint). Called on quit
        and when the app ends any other way, perhaps after the pane's widgets are gone: touch
        none of them."""

    def open_run(self, run: str, purpose: str = "open") -> None:
        """Show run ``run`` (see ``OpenRun``)."""
        self.notify(f"this pane cannot open runs ({run!r})", severity="warning")

    def check_pane_action(self, action: str) -> bool | None:
        """Whether the Footer shows action ``action`` now (None: shown greyed out)."""
        return True

    def form_changed(self, config, error: str) -> None:
        """The Config pane's form changed (see ``FormChanged``)."""

    def runs_changed(self) -> None:
        """Runs were added or changed (see ``RunsChanged``)."""
