"""The help screen is generated from the App's bindings: every key, under its pane, as the
Footer shows it; no markup left in the text; it opens, scrolls to its end and closes."""

from __future__ import annotations

import time

from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.tui.help import DETAIL, SECTIONS, help_text


async def wait_for(pilot, cond, what: str, timeout: float = 20.0) -> None:
    """Let the app run until ``cond()`` holds (a condition, never a fixed wait)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def _sections(text: str) -> dict[str, str]:
    titles = [t for _, t in SECTIONS]
    out, cur = {}, None
    for line in text.splitlines():
        if line in titles:
            cur = line
            out[cur] = ""
        elif cur:
            out[cur] += line + "\n"
    return out


async def test_every_binding_is_in_the_help_under_its_pane(built_ws, make_app):
    app = make_app(built_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        text = help_text(app.BINDINGS, app.get_key_display).plain
        sections = _sections(text)
        assert list(sections) == ["Anywhere", "Tokenizer", "Config", "Train", "Trace", "Chat", "Runs"]
        titles = dict(SECTIONS)
        for b in app.BINDINGS:
            if b.id.startswith("app.pane."):
                assert "switch pane: " in sections["Anywhere"] and b.description in sections["Anywhere"]
                continue
            body = " ".join(sections[titles[b.id.split(".")[0]]].split())  # unwrap
            what = " ".join(DETAIL.get(b.id, b.description).split())
            assert f"{app.get_key_display(b)} " in body and what in body, (b.id, body)
        assert "[/" not in text and "[b]" not in text
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: bool(app.screen.query("#help-text")), "the help screen to open")
        shown = app.screen.query_one("#help-text", Static)
        assert str(shown.render()).strip().startswith("workbench")
        box = app.screen.query_one("#help-box", VerticalScroll)
        await wait_for(pilot, lambda: box.max_scroll_y > 0, "the help to be laid out taller than the screen")
        assert box.scroll_y == 0
        await pilot.press("end")
        await wait_for(pilot, lambda: box.scroll_y == box.max_scroll_y, "the help to scroll to its end")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.screen.query("#help-text"), "the help screen to close")
