"""Panes that later issues fill in: Train and Runs (issue 7), Trace and Chat (issue 8).

Each is a real pane in the shell (a tab, a number key, a palette entry) that says plainly
what it will do and which headless command does some of it today.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

LATER = {
    "train": ("Train", 7, "Train a model from a config with live loss, learning-rate and tokens/s "
              "charts, samples as it learns, pause/stop and resume."),
    "trace": ("Trace", 8, "Look inside a model: every module call with tensor shapes and stats, "
              "as a tree (shapes only on the meta device for configs too large for RAM)."),
    "chat": ("Chat", 8, "Talk to a checkpoint: streaming generation with temperature, top-k, "
             "top-p and a KV cache."),
    "runs": ("Runs", 7, "Compare runs: configs, loss curves side by side, bits per byte."),
}
COMMANDS = {"trace": "workbench trace --config debug"}


class LaterPane(Vertical):
    """A pane this issue does not build yet, saying which issue does."""

    def __init__(self, key: str, **kw):
        super().__init__(**kw)
        self.key = key

    def compose(self) -> ComposeResult:
        title, issue, what = LATER[self.key]
        text = f"[b]{title}[/b]\n\n{what}\n\n[dim]Not built yet: issue {issue} adds this pane.[/dim]"
        if self.key in COMMANDS:
            text += f"\n[dim]Today, from a shell: {COMMANDS[self.key]}[/dim]"
        yield Static(text, classes="later-text")
