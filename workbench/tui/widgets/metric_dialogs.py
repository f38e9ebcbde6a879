"""The Runs pane's two metric pickers: which metrics get a panel in the grid (``m``), and what
the table is ordered by (ctrl+s). Both list what the runs logged (``runs.metrics``), never a
fixed set; the pane acts on the answer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, SelectionList, Static
from textual.widgets.option_list import Option


class PanelsScreen(ModalScreen["list[str] | None"]):
    """space ticks a metric, enter shows the ticked ones (none: back to the curves); esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="panels.cancel"),
                Binding("enter", "submit", "Show", id="panels.submit", priority=True)]

    def __init__(self, metrics: list[tuple[str, str]], picked: list[str],
                 title: str = "Metric panels: one chart per ticked metric, for the runs the overlay shows"):
        """``metrics``: (name, a note on it: which runs logged how many points) in the runs' order."""
        super().__init__()
        self.metrics, self.picked, self.title_text = metrics, picked, title

    def compose(self) -> ComposeResult:
        with Vertical(id="panels-box"):
            yield Static(self.title_text, id="panels-title", markup=False)
            width = max((len(m) for m, _ in self.metrics), default=0)
            yield SelectionList(*[(f"{m:<{width}}  {note}", m, m in self.picked) for m, note in self.metrics],
                                id="panels-list")
            yield Static("space: tick · enter: show · esc: cancel", id="panels-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def action_submit(self) -> None:
        ticked = set(self.query_one(SelectionList).selected)
        self.dismiss([m for m, _ in self.metrics if m in ticked])

    def action_cancel(self) -> None:
        self.dismiss(None)


class SortScreen(ModalScreen["str | None"]):
    """enter orders the table by the highlighted choice (``runs.metrics.parse_sort``'s text);
    esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="sort.cancel")]

    def __init__(self, choices: list[tuple[str, str]], current: str):
        """``choices``: (order, label) pairs; ``current``: the order now (highlighted)."""
        super().__init__()
        self.choices, self.current = choices, current

    def compose(self) -> ComposeResult:
        with Vertical(id="sort-box"):
            yield Static("Order the runs by (pinned runs stay first)", id="sort-title", markup=False)
            yield OptionList(*[Option(label, id=order) for order, label in self.choices], id="sort-list")
            yield Static("↑/↓ then enter: order · esc: cancel", id="sort-hint", markup=False)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        ids = [order for order, _ in self.choices]
        if self.current in ids:
            options.highlighted = ids.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
