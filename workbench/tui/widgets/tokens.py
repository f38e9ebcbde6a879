"""Rendering a text's tokens: alternating colours, ids underneath, and the count."""

from __future__ import annotations

from rich.text import Text

# Two background styles that read well on dark and light themes alike.
STYLES = ("black on #7fb8e6", "black on #e6c27f")
MAX_SHOWN = 2000


def visible(surface: str) -> str:
    """Whitespace a reader can see: newlines as ↵ (followed by the real break), tabs as →."""
    return surface.replace("\t", "→").replace("\n", "↵\n")


def render_tokens(pieces: list[tuple[int, str]]) -> Text:
    """The text, each token a coloured span; tokens past MAX_SHOWN are summarised."""
    out = Text()
    for k, (_, surface) in enumerate(pieces[:MAX_SHOWN]):
        out.append(visible(surface), style=STYLES[k % 2])
    if len(pieces) > MAX_SHOWN:
        out.append(f" … {len(pieces) - MAX_SHOWN} more", style="dim")
    return out


def render_ids(pieces: list[tuple[int, str]]) -> Text:
    out = Text()
    for k, (i, _) in enumerate(pieces[:MAX_SHOWN]):
        if k:
            out.append(" ")
        out.append(str(i), style=STYLES[k % 2])
    return out


def count_line(pieces: list[tuple[int, str]], text: str) -> str:
    n, chars, nbytes = len(pieces), len(text), len(text.encode("utf-8"))
    if not n:
        return "0 tokens"
    return (f"{n} token{'s' if n != 1 else ''} · {chars} chars · {nbytes} bytes · "
            f"{nbytes / n:.2f} bytes/token")
