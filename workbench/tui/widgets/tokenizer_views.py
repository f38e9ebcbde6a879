"""Views of one built tokenizer: "try it", the vocabulary browser, and the bytes/token chart."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Static, TextArea

from workbench.tui.widgets.tokens import count_line, render_ids, render_tokens
from workbench.tui.widgets.form_fields import FormInput

SAMPLE_TEXT = "Once upon a time, there was a little girl named Lily. She loved to play outside."
MAX_VOCAB_ROWS = 1000


def stats_cells(stats: dict) -> list[str]:
    """A built tokenizer's row in the table: vocab, alphabet, bytes per token, build seconds."""
    def num(v, fmt: str = "{}") -> str:
        return "—" if v is None else fmt.format(v)

    return [num(stats.get("vocab_size")), num(stats.get("alphabet_size")),
            num(stats.get("bytes_per_token"), "{:.2f}"), num(stats.get("build_seconds"), "{:.2f}")]


class TryIt(Vertical):
    """A text box; below it the text split into tokens, their ids and the count, live."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.tokenizer = None

    def compose(self) -> ComposeResult:
        yield TextArea(SAMPLE_TEXT, id="try-input", soft_wrap=True, show_line_numbers=False)
        yield Static("", id="try-count")
        with VerticalScroll(id="try-scroll"):
            yield Static("", id="try-tokens")
            yield Static("", id="try-ids")

    def set_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.update()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self.update()

    def update(self) -> None:
        text = self.query_one("#try-input", TextArea).text
        if self.tokenizer is None:
            self.query_one("#try-count", Static).update("no tokenizer yet: build one, then type here")
            self.query_one("#try-tokens", Static).update("")
            self.query_one("#try-ids", Static).update("")
            return
        pieces = self.tokenizer.pieces(text)
        self.query_one("#try-count", Static).update(count_line(pieces, text))
        self.query_one("#try-tokens", Static).update(render_tokens(pieces))
        self.query_one("#try-ids", Static).update(render_ids(pieces))


class VocabBrowser(Vertical):
    """Every piece in id order (normal pieces are in merge order), filtered by a search box."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.vocab: list[dict] = []

    def compose(self) -> ComposeResult:
        yield FormInput(placeholder="search pieces (a space matches ▁)", id="vocab-search", compact=True)
        yield Static("", id="vocab-count")
        table = DataTable(id="vocab-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("id", "merge", "piece", "kind")
        yield table

    def set_tokenizer(self, tokenizer) -> None:
        self.vocab = tokenizer.vocab() if tokenizer is not None else []
        first_normal = next((v["id"] for v in self.vocab if v["kind"] == "normal"), 0)
        for v in self.vocab:
            v["merge"] = v["id"] - first_normal + 1 if v["kind"] == "normal" else None
        self.fill()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.fill()

    def fill(self) -> None:
        query = self.query_one("#vocab-search", Input).value.replace(" ", "▁").lower()
        rows = [v for v in self.vocab if query in v["piece"].lower()] if query else self.vocab
        table = self.query_one("#vocab-table", DataTable)
        table.clear()
        for v in rows[:MAX_VOCAB_ROWS]:
            merge = "" if v["merge"] is None else str(v["merge"])
            table.add_row(str(v["id"]), merge, v["piece"], v["kind"])
        shown = f"showing {MAX_VOCAB_ROWS} of " if len(rows) > MAX_VOCAB_ROWS else ""
        total = len(self.vocab)
        self.query_one("#vocab-count", Static).update(
            f"{shown}{len(rows)} of {total} pieces" if query else f"{shown}{total} pieces")
