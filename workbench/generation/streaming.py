"""Turning a growing list of token ids into text deltas, exactly.

Decoding token by token is wrong in two ways: a character split over several byte-fallback
pieces (``<0xE6> <0x97> <0xA5>`` is "日") decodes piece by piece to replacement characters, and
a stop string may span tokens. Two small classes fix that:

* ``TextDeltas`` keeps the ids not yet turned into text and decodes them as one run; while
  that run ends in U+FFFD (a character whose bytes have not all arrived) it waits. Emitting
  only at points where the text ends on a whole character makes the cut points character
  boundaries, and sentencepiece's decode is concatenative across those (our tokenizers add no
  dummy prefix, so a leading "▁" is a real space; for one that does — Llama's, imported — every
  run after the first text is decoded with ``decode_after``, which keeps that space, and ids are
  held until the first text appears, since the space dropped is that of the first piece), so the
  concatenated deltas are exactly ``decode(all ids)``. ``flush()`` releases a trailing incomplete run at the end, decoded as
  ``decode`` would.
* ``StopStrings`` holds back text that might be the start of a stop string, and cuts the text
  where one appears.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class TextDeltas:
    """Feed ids one at a time; get back the text they complete (often "" inside a character)."""

    def __init__(self, decode, decode_after=None):
        self.decode = decode  # ids -> str, e.g. Tokenizer.decode
        self.decode_after = decode_after or decode  # the same, after some text (Tokenizer.decode_after)
        self.pending: list[int] = []
        self.started = False  # some text has been given out

    def _text(self) -> str:
        return (self.decode_after if self.started else self.decode)(self.pending)

    def push(self, token_id: int) -> str:
        self.pending.append(int(token_id))
        text = self._text()
        if text.endswith(REPLACEMENT):
            return ""  # maybe a character still arriving; decided by the next ids or flush()
        if not text and not self.started:
            return ""  # nothing yet (control pieces, a dummy prefix's space): the start is still ahead
        self.pending.clear()
        self.started = True
        return text

    def flush(self) -> str:
        text = self._text() if self.pending else ""
        self.pending.clear()
        return text


class StopStrings:
    """Text in, safe-to-show text out; ``hit`` turns true when a stop string appears.

    The text shown never includes a stop string or anything after it, and the concatenation of
    everything returned is ``full_text[:first stop]`` (or all of it, after ``flush``).
    """

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(s for s in stops if s)
        self.text = ""      # everything received
        self.shown = 0      # how much of it has been returned
        self.hit = False

    def push(self, delta: str) -> str:
        if self.hit:
            return ""
        searched_from = max(0, len(self.text) - max((len(s) for s in self.stops), default=0) + 1)
        self.text += delta
        if not self.stops:
            return self._show(len(self.text))
        cuts = [i for s in self.stops if (i := self.text.find(s, searched_from)) >= 0]
        if cuts:
            self.hit = True
            self.text = self.text[:min(cuts)]
            return self._show(len(self.text))
        return self._show(len(self.text) - self._held())

    def flush(self) -> str:
        return "" if self.hit else self._show(len(self.text))

    def _held(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def _show(self, upto: int) -> str:
        upto = max(upto, self.shown)
        out = self.text[self.shown:upto]
        self.shown = upto
        return out
