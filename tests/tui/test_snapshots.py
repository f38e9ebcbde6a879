"""Snapshots of both panes and the help screen at a fixed size (fixed machine numbers,
pinned tokenizer stats). Regenerate with ``pytest tests/tui --snapshot-update``."""

from __future__ import annotations

from .conftest import SNAPSHOT_SIZE


async def _settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_tokenizer_pane(snap_compare, built_ws, make_app):
    assert snap_compare(make_app(built_ws), terminal_size=SNAPSHOT_SIZE, run_before=_settle)


def test_config_pane(snap_compare, built_ws, make_app):
    async def run_before(pilot):
        await pilot.press("2")
        await _settle(pilot)
        await pilot.press(*["tab"] * 6)  # focus a field: its help shows below

    assert snap_compare(make_app(built_ws), terminal_size=SNAPSHOT_SIZE, run_before=run_before)


def test_help_screen(snap_compare, built_ws, make_app):
    async def run_before(pilot):
        await _settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=SNAPSHOT_SIZE, run_before=run_before)
