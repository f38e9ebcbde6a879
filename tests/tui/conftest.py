"""Fixtures for the app tests: a synthetic corpus, a workspace with one tokenizer built from
it (stats pinned so snapshots do not show timings), and an app with fixed machine numbers."""

from __future__ import annotations

import inspect
import json
import shutil

import pytest

from workbench.workspace import Workspace

from helpers import inject_matmul, write_story_file

SNAPSHOT_SIZES = {"120x40": (120, 40), "80x24": (80, 24)}  # every pane and dialog at both


@pytest.fixture(params=list(SNAPSHOT_SIZES.values()), ids=list(SNAPSHOT_SIZES))
def snapshot_size(request):
    return request.param


@pytest.fixture
def snap_compare(snap_compare):
    """The plugin's snap_compare, with the text cursors held still before the screenshot: a
    focused Input blinks every half second, so on a loaded machine the picture could catch
    it in either phase."""

    def compare(app, *args, run_before=None, **kwargs):
        async def steady(pilot):
            if run_before is not None:
                result = run_before(pilot)
                if inspect.isawaitable(result):
                    await result
            await pilot.pause()
            for widget in pilot.app.screen.query("Input, TextArea"):
                widget.cursor_blink = False  # shows the cursor, steady, where it has focus
            await pilot.pause()

        return snap_compare(app, *args, run_before=steady, **kwargs)

    return compare


@pytest.fixture(scope="session")
def story_file(tmp_path_factory):
    """One .txt of templated TinyStories-like stories (``write_story_file``)."""
    return write_story_file(tmp_path_factory.mktemp("corpus") / "stories.txt")


@pytest.fixture(scope="session")
def built_root(tmp_path_factory, story_file):
    """A workspace folder holding tokenizer ``stories-400``, built once per session."""
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    root = tmp_path_factory.mktemp("built")
    info = build_tokenizer(Workspace.at(root), "stories-400",
                           TokenizerSettings(vocab_size=400, sample_mb=1, data=str(story_file)))
    stats_path = info.path / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats.update(build_seconds=1.25, train_seconds=1.0, created="2024-01-01T00:00:00+0000")
    stats_path.write_text(json.dumps(stats))
    return root


@pytest.fixture
def built_ws(built_root, tmp_path):
    """A private copy of the built workspace, so a test may add to it."""
    root = tmp_path / "ws"
    shutil.copytree(built_root, root)
    return Workspace.at(root)


@pytest.fixture(autouse=True)
def measured_machine(tmp_path, monkeypatch):
    """Each app test sees the same machine facts: a fresh probe cache with only the suite's
    injected "bf16 is not faster" measurement (no attention kernel measured by earlier tests),
    so estimates and snapshots never depend on what this machine measured."""
    from workbench.machine.probe import CACHE_ENV


    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "probe-cache"))
    inject_matmul(0.5)


@pytest.fixture
def make_app():
    from workbench.tui.app import WorkbenchApp
    from workbench.machine.sysinfo import FixedProbe

    def make(ws):
        return WorkbenchApp(ws, probe=FixedProbe(), theme="textual-dark")

    return make
