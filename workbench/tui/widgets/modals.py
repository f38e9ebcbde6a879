"""Modal screens: the help screen, a yes/no question, and a file or folder picker."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Static
from workbench.tui.widgets.form_fields import FormInput



class HelpScreen(ModalScreen[None]):
    """Every key the app answers, in one place: generated from the App's bindings (``help.py``)."""

    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close help", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(self.text(), id="help-text")

    def text(self):
        from workbench.tui.help import help_text

        return help_text(self.app.BINDINGS, self.app.get_key_display)

    def action_dismiss(self, result=None) -> None:  # type: ignore[override]
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y``/``n`` answer it, and so do the buttons."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No", detail=None):
        super().__init__()
        self.question, self.yes, self.no, self.detail = question, yes, no, detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="with-detail" if self.detail is not None else ""):
            yield Static(self.question, id="confirm-question", markup=False)
            if self.detail is not None:  # what the question is about, to read first (e.g. code)
                with VerticalScroll(id="confirm-detail"):
                    yield Static(self.detail)
            with Horizontal(id="confirm-buttons"):
                yield Button(self.yes, variant="error", id="confirm-yes")
                yield Button(self.no, variant="primary", id="confirm-no")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PathPicker(ModalScreen["str | None"]):
    """Browse for a data file or folder. Enter on a file picks it; ``ctrl+u`` picks the
    highlighted folder; the path box at the top can be typed into and re-rooted."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="picker.cancel"),
        Binding("ctrl+u", "use_folder", "Use folder", id="picker.folder"),
        Binding("backspace", "up", "Parent folder", id="picker.up"),
    ]

    def __init__(self, start: Path):
        super().__init__()
        self.start = start if start.is_dir() else Path.home()

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Static("Choose a data file (.txt/.jsonl/.json/.parquet) or a folder of them",
                         id="picker-title")
            yield FormInput(str(self.start), id="picker-root", compact=True)
            yield DirectoryTree(self.start, id="picker-tree")
            yield Static("enter: pick file · ctrl+u: use highlighted folder · backspace: "
                         "parent · esc: cancel", id="picker-hint")

    def on_mount(self) -> None:
        self.query_one(DirectoryTree).focus()

    @property
    def tree(self) -> DirectoryTree:
        return self.query_one(DirectoryTree)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        p = Path(event.value).expanduser()
        if p.is_file():
            self.dismiss(str(p))
        elif p.is_dir():
            self.tree.path = p
            self.tree.focus()
        else:
            self.notify(f"{event.value!r} does not exist", severity="error")

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(str(event.path))

    def action_use_folder(self) -> None:
        node = self.tree.cursor_node
        path = node.data.path if node is not None and node.data is not None else Path(self.tree.path)
        self.dismiss(str(path if path.is_dir() else path.parent))

    def action_up(self) -> None:
        if self.focused is self.tree:
            parent = Path(self.tree.path).resolve().parent
            self.tree.path = parent
            self.query_one("#picker-root", Input).value = str(parent)

    def action_cancel(self) -> None:
        self.dismiss(None)
