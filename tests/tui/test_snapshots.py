"""Snapshots of panes, the help screen and the dialogs at 120x40 and 80x24 (fixed machine
numbers, pinned tokenizer stats). Regenerate with ``pytest tests/tui --snapshot-update``."""

from __future__ import annotations

import pytest



async def _settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_tokenizer_pane(snap_compare, snapshot_size, built_ws, make_app):
    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=_settle)


def test_config_pane(snap_compare, snapshot_size, built_ws, make_app):
    async def run_before(pilot):
        await pilot.press("2")
        await _settle(pilot)
        await pilot.press(*["tab"] * 6)  # focus a field: its help shows below

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


def test_help_screen(snap_compare, snapshot_size, built_ws, make_app):
    async def run_before(pilot):
        await _settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


# --- dialogs: each wraps its whole question and fits, at both sizes -------------------------


def test_quit_while_training_dialog(snap_compare, snapshot_size, built_ws, make_app):
    async def run_before(pilot):
        await _settle(pilot)
        pilot.app.panes["train"].running = True  # what the App asks about; nothing else is read
        await pilot.press("ctrl+q")
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


@pytest.mark.parametrize("key", ["ctrl+d", "ctrl+n"], ids=["delete", "rename"])
def test_runs_dialog(snap_compare, snapshot_size, key, built_ws, make_app):
    from .test_runs_pane import _open, _two_runs

    _two_runs(built_ws)

    async def run_before(pilot):
        await _open(pilot, pilot.app)
        await pilot.press(key)
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


def test_sweep_dialog(snap_compare, snapshot_size, built_ws, make_app):
    from .test_runs_pane import _open, _two_runs

    _two_runs(built_ws)

    async def run_before(pilot):
        await _open(pilot, pilot.app)
        await pilot.press("ctrl+w")
        await pilot.pause()
        pilot.app.screen.query_one("#sweep-data").value = "stories.txt"  # not this test's temporary path
        pilot.app.screen.query_one("#sweep-name").value = "sweep-1"  # not the date
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)
