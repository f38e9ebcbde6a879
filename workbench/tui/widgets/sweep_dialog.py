"""The sweep dialog (the Runs pane's ctrl+w): a base config, a grid, a budget per run, how many
at once — what `workbench sweep` takes. ``check`` turns the answers into a checked
``SweepRequest`` (or says what is wrong, shown in the dialog, which stays open)."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, Select, Static
from workbench.tui.widgets.form_fields import FormCheckbox, FormInput, FormSelect

FORM = "__form__"  # the Config pane's form as the base
BUDGETS = ("minutes", "tokens", "steps")


class SweepScreen(ModalScreen["object | None"]):
    """enter starts the sweep (if ``check`` accepts it); esc cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="sweep.cancel")]

    def __init__(self, bases: list[tuple[str, str]], tokenizers: dict[str, str], name: str,
                 check: Callable[[dict], object]):
        """``bases``: (label, value) choices; ``tokenizers``: name -> the data it was built on;
        ``check(answers)`` returns the request or raises a WorkbenchError saying what is wrong."""
        super().__init__()
        self.bases, self.tokenizers, self.sweep_name, self.check = bases, tokenizers, name, check

    def compose(self) -> ComposeResult:
        tok = next(iter(self.tokenizers), None)
        with Vertical(id="sweep-box"):
            yield Static("Sweep: train every combination of the grid, each for the budget, ranked by bits "
                         "per byte", id="sweep-title", markup=False)
            yield from self._row("base", FormSelect(self.bases, value=self.bases[0][1], allow_blank=False,
                                                compact=True, id="sweep-base"))
            yield from self._row("tokenizer", FormSelect([(n, n) for n in self.tokenizers], value=tok or Select.NULL,
                                                     compact=True, id="sweep-tokenizer", prompt="build one first"))
            yield from self._row("data", FormInput(self.tokenizers.get(tok, "") if tok else "", compact=True,
                                               id="sweep-data"))
            yield from self._row("grid", FormInput("", compact=True, id="sweep-grid",
                                               placeholder="train.lr=0.002,0.005 model.dim=96,128"))
            with Horizontal(classes="sweep-row"):
                yield Label("budget", classes="sweep-label")
                yield FormSelect([(b, b) for b in BUDGETS], value="minutes", allow_blank=False, compact=True,
                             id="sweep-budget")
                yield FormInput("10", compact=True, id="sweep-amount", placeholder="each run")
            yield from self._row("at once", FormInput("1", compact=True, id="sweep-parallel"))
            yield from self._row("name", FormInput(self.sweep_name, compact=True, id="sweep-name"))
            yield FormCheckbox("rank on the whole validation split (after all training)", id="sweep-full")
            yield Static("", id="sweep-error", classes="error", markup=False)
            yield Static("enter: start · esc: cancel", id="sweep-hint", markup=False)

    @classmethod
    def for_workspace(cls, ws, form=None) -> "SweepScreen":
        """The dialog over workspace ``ws``: its presets (and the Config pane's ``form`` when it
        is valid) as bases, its tokenizers with the data each was built on, and the engine's
        ``sweep.request_from_text`` as the check."""
        import time

        from workbench.config.schema import preset_names
        from workbench.planning.sweep import request_from_text
        from workbench.tokenizer.tokenizer import list_tokenizers

        bases = ([("the Config pane's form", FORM)] if form is not None else []) + [(n, n) for n in preset_names(ws)]
        toks = {t.name: str(t.settings.get("data") or "") for t in list_tokenizers(ws)}
        return cls(bases, toks, f"sweep-{time.strftime('%m%d-%H%M')}",
                   lambda answers: request_from_text(ws, answers, form if answers["base"] == FORM else answers["base"]))

    @staticmethod
    def _row(label: str, widget) -> ComposeResult:
        with Horizontal(classes="sweep-row"):
            yield Label(label, classes="sweep-label")
            yield widget

    def on_mount(self) -> None:
        self.query_one("#sweep-grid", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "sweep-tokenizer" and isinstance(event.value, str):
            self.query_one("#sweep-data", Input).value = self.tokenizers.get(event.value, "")

    def answers(self) -> dict:
        def value(wid: str):
            w = self.query_one(f"#{wid}")
            return w.value if not isinstance(w, Select) or w.value is not Select.NULL else None

        return {"base": value("sweep-base"), "tokenizer": value("sweep-tokenizer"), "data": value("sweep-data"),
                "grid": value("sweep-grid"), "budget": value("sweep-budget"), "amount": value("sweep-amount"),
                "parallel": value("sweep-parallel"), "name": value("sweep-name"),
                "full_eval": self.query_one("#sweep-full", Checkbox).value}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        from workbench.errors import user_message

        try:
            req = self.check(self.answers())
        except Exception as e:  # said in the dialog, never a traceback
            self.query_one("#sweep-error", Static).update(user_message(e))
            return
        self.dismiss(req)

    def action_cancel(self) -> None:
        self.dismiss(None)
