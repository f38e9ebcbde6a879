"""One reply column of the Chat pane: the stream a generation worker fills, and the view
that repaints it in batches, colours tokens by probability and lets a token be selected
(←/→) to show the model's top-5 alternatives at that step."""

from __future__ import annotations

import threading
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from workbench.tui.widgets.tokens import visible

clock = time.perf_counter  # tests replace it so snapshots show fixed rates

# low → high probability; readable on dark and light themes
PROB_STYLES = ((0.05, "bold #ff5f5f"), (0.2, "#ff9f43"), (0.5, "#f6d743"), (0.8, "#9be564"),
               (1.01, "#4fd1a1"))
REASONS = {"eos": "end of text", "stop": "stop string", "max_tokens": "max tokens",
           "cancelled": "stopped (esc)"}


def prob_style(p: float) -> str:
    return next(s for limit, s in PROB_STYLES if p < limit)


class Stream:
    """What a generation worker fills and the UI drains: steps appended as they come (a list
    append is atomic), then ``done``. The worker never touches a widget."""

    def __init__(self, label: str):
        self.label = label
        self.stop = threading.Event()
        self.steps: list = []     # TokenStep; id -1 is trailing text, not a token
        self.n_tokens = 0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.done = False
        self.result = None        # Completion
        self.beams = None         # generate.BeamResult, for beam decoding
        self.error = ""
        self.seed = None

    def push(self, step) -> None:
        if step.id >= 0:
            now = clock()
            self.t_first = self.t_first if self.t_first is not None else now
            self.t_last = now
            self.n_tokens += 1
        self.steps.append(step)

    @property
    def tok_s(self) -> float | None:
        if self.n_tokens > 1 and self.t_last > self.t_first:
            return (self.n_tokens - 1) / (self.t_last - self.t_first)
        return None

    @property
    def text(self) -> str:
        return "".join(s.text for s in list(self.steps))


def beams_text(streams: list) -> Text:
    """Every beam of each column's search, best first: its log-probability, how it ended, and
    the start of its text (the reply above is beam 1)."""
    t = Text()
    for s in streams:
        if len(streams) > 1:
            t.append(s.label + "\n", style="bold")
        for k, b in enumerate(s.beams.beams):
            n = len(b.ids) + (b.ended == "eos")
            t.append(f"beam {k + 1}", style="bold" if k == 0 else "")
            t.append(f"  {b.logprob:8.2f} ({b.logprob / max(1, n):.2f}/tok, {b.ended.replace('_', ' ')})  ", style="dim")
            t.append(visible(b.text).replace("\n", " ")[:200] + "\n")
    t.rstrip()
    return t


def transcript(columns: list) -> str:
    """What copying the replies takes: one reply's prompt and text, or each under its label."""
    if len(columns) == 1:
        return columns[0].prompt + columns[0].stream.text
    return "\n\n".join(f"[{c.stream.label}]\n{c.prompt}{c.stream.text}" for c in columns)


class ReplyView(VerticalScroll, can_focus=True):
    """The scrolling body of a reply; ←/→ move the token cursor."""

    BINDINGS = [
        Binding("left", "token(-1)", "◀ token", id="chat.token_prev", show=False),
        Binding("right", "token(1)", "token ▶", id="chat.token_next", show=False),
        Binding("home", "token_first", "First token", id="chat.token_first", show=False),
        Binding("end", "token_last", "Last token", id="chat.token_last", show=False),
    ]

    def action_token(self, step: int) -> None:
        self.parent.move_token(step)

    def action_token_first(self) -> None:
        self.parent.select_token(0)

    def action_token_last(self) -> None:
        self.parent.select_token(-1)


class ReplyColumn(Vertical):
    """Header (which checkpoint), the reply, and its numbers."""

    class TokenSelected(Message):
        def __init__(self, column: "ReplyColumn"):
            super().__init__()
            self.column = column

    def __init__(self, **kw):
        super().__init__(**kw)
        self.stream: Stream | None = None
        self.prompt = ""
        self.colour = False
        self.selected: int | None = None   # index into token steps
        self._text = Text()
        self._painted = 0

    def compose(self) -> ComposeResult:
        yield Static("", classes="ch-head")
        with ReplyView(classes="ch-scroll", id=(self.id or "").replace("reply", "scroll") or None):
            yield Static("", classes="ch-body")
        yield Static("", classes="ch-stats")

    # --- painting ------------------------------------------------------------------------

    def start(self, stream: Stream, prompt: str) -> None:
        self.stream, self.prompt, self.selected = stream, prompt, None
        self.query_one(".ch-head", Static).update(Text(stream.label, style="bold"))
        self.repaint(full=True)

    def clear(self) -> None:
        self.stream, self.prompt, self.selected = None, "", None
        self.query_one(".ch-head", Static).update("")
        self.repaint(full=True)

    def tokens(self) -> list:
        return [s for s in (self.stream.steps if self.stream else []) if s.id >= 0]

    def drain(self) -> bool:
        """Paint what arrived since the last call; True while more may come."""
        s = self.stream
        if s is None:
            return False
        if len(s.steps) != self._painted:
            self.repaint()
            self.query_one(ReplyView).scroll_end(animate=False)
        if s.done:
            self._paint_stats()
        return not s.done

    def repaint(self, full: bool = False) -> None:
        s = self.stream
        if full or s is None or self._painted > len(s.steps):
            self._text = Text()
            self._painted = 0
            if self.prompt:
                self._text.append(visible(self.prompt), style="dim")
        if s is not None:
            steps = s.steps[self._painted:]
            tok_index = sum(1 for x in s.steps[:self._painted] if x.id >= 0)
            for step in steps:
                style = ""
                if step.id >= 0:
                    if self.colour:
                        style = prob_style(step.prob)
                    if tok_index == self.selected:
                        style = (style + " reverse").strip()
                    tok_index += 1
                text = visible(step.text)
                if tok_index - 1 == self.selected and step.id >= 0 and not text:
                    text = "▯"  # a token that shows no text yet (part of a character)
                self._text.append(text, style=style)
            self._painted += len(steps)
        body = self._text.copy()
        if s is not None and not s.done:
            body.append("▌", style="blink")
        self.query_one(".ch-body", Static).update(body)
        self._paint_stats()

    def _paint_stats(self) -> None:
        s = self.stream
        box = self.query_one(".ch-stats", Static)
        if s is None:
            box.update("")
            return
        if s.error:
            box.update(Text(s.error, style="bold red"))
            return
        parts = [f"{s.n_tokens} token{'s' if s.n_tokens != 1 else ''}"]
        rate = s.tok_s if s.beams is None else None  # a search's tokens arrive all at once at the end
        if rate is not None:
            parts.append(f"{rate:,.0f} tok/s")
        if s.done and s.beams is not None and s.beams.beams:
            b = s.beams.beams[0]
            n = len(b.ids) + (b.ended == "eos")
            parts.append(f"beam 1 of {len(s.beams.beams)}: log-prob {b.logprob:.2f} ({b.logprob / max(1, n):.2f}/token)")
            parts.append(f"ended at {b.ended.replace('_', ' ')}")
            parts.append(f"searched in {s.beams.seconds:.2f} s")
            parts.append(s.beams.precision)
            parts += s.beams.notes[:1]
        elif s.done and s.result is not None:
            parts.append(REASONS.get(s.result.stop_reason, s.result.stop_reason))
            parts.append(f"seed {s.result.seed}")
            parts.append(s.result.precision)
            parts += s.result.notes[:1]
        elif not s.done:
            parts.append("generating … (esc stops)")
        box.update(" · ".join(parts))

    # --- the token cursor ----------------------------------------------------------------

    def set_colour(self, on: bool) -> None:
        self.colour = on
        self.repaint(full=True)

    def move_token(self, step: int) -> None:
        n = len(self.tokens())
        if not n:
            return
        if self.selected is None:
            self.select_token(-1 if step < 0 else 0)
        else:
            self.select_token(max(0, min(n - 1, self.selected + step)))

    def select_token(self, i: int) -> None:
        n = len(self.tokens())
        if not n:
            return
        self.selected = i % n
        self.repaint(full=True)
        self.post_message(self.TokenSelected(self))

    def alternatives(self) -> Text:
        toks = self.tokens()
        if self.selected is None or self.selected >= len(toks):
            return Text("")
        st = toks[self.selected]
        t = Text()
        t.append(f"token {self.selected + 1}/{len(toks)} ", style="dim")
        t.append(repr(st.piece), style="bold reverse")
        t.append(f" p={st.prob:.3f}   top 5: ", style="dim")
        for k, ((i, p), piece) in enumerate(zip(st.top, st.top_pieces)):
            if k:
                t.append("  ")
            t.append(repr(piece), style=prob_style(p) + (" underline" if i == st.id else ""))
            t.append(f" {p:.3f}", style="dim")
        return t
