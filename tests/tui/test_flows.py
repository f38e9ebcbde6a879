"""Keyboard-only flows through the app, driven with Pilot; waits are on conditions."""

from __future__ import annotations

from pathlib import Path

from workbench.config.schema import read_config
from workbench.workspace import Workspace

from helpers import focus, type_into, wait_for, write_big_corpus


async def test_build_tokenizer_then_try_it(tmp_path, story_file, make_app):
    from textual.widgets import DataTable, Static

    app = make_app(Workspace.at(tmp_path / "ws"))
    async with app.run_test(size=(120, 40)) as pilot:
        await focus(pilot, app, "tok-data")
        await type_into(pilot, str(story_file))
        await focus(pilot, app, "tok-name")
        await type_into(pilot, "tiny")
        await focus(pilot, app, "tok-vocab")
        await pilot.press("ctrl+e", "ctrl+u", "4", "0", "0")
        await focus(pilot, app, "tok-sample")
        await pilot.press("ctrl+e", "ctrl+u", "1")
        await pilot.press("ctrl+b")
        table = app.query_one("#tok-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the built tokenizer in the table")
        row = table.get_row_at(0)
        assert row[0] == "tiny" and row[1] == "400"
        assert app.query_one("#tok-error", Static).render().plain == ""
        assert (tmp_path / "ws" / "tokenizers" / "tiny" / "tokenizer.model").is_file()

        # try it: type and watch the count follow
        await focus(pilot, app, "try-input")
        await pilot.press("pageup", "ctrl+a", *["delete"] * 100)  # an empty box
        count = app.query_one("#try-count", Static)
        await wait_for(pilot, lambda: str(count.render()).startswith("0 tokens"), what="empty count")
        await pilot.press(*"the", "space", *"cat", "space", *"played")
        await wait_for(pilot, lambda: " tokens · 14 chars" in str(count.render()),
                       what="the token count of the typed text")
        n = int(str(count.render()).split()[0])
        tok = app.query_one("#tokenizer-pane").tokenizer
        assert n == len(tok.encode("the cat played"))
        ids = str(app.query_one("#try-ids", Static).render())
        assert ids.split() == [str(i) for i in tok.encode("the cat played")]


async def test_bad_vocab_shown_in_place(tmp_path, story_file, make_app):
    from textual.widgets import Static

    app = make_app(Workspace.at(tmp_path / "ws"))
    async with app.run_test(size=(120, 40)) as pilot:
        await focus(pilot, app, "tok-data")
        await type_into(pilot, str(story_file))
        await focus(pilot, app, "tok-vocab")
        await pilot.press("ctrl+e", "ctrl+u", "9", "9", "9", "9", "9", "9")
        await pilot.press("enter")
        err = app.query_one("#tok-error", Static)
        await wait_for(pilot, lambda: "vocab size" in str(err.render()), what="the error")
        assert "32768" in str(err.render())
        assert not app.query_one("#tokenizer-pane").building


async def test_the_build_form_marks_red_exactly_what_the_engine_refuses(tmp_path, make_app):
    """The vocab and sample boxes use the engine's own check: a value is red if and only if
    ``build_request`` refuses it, with the engine's message."""
    from textual.widgets import Input

    from workbench.errors import WorkbenchError
    from workbench.tokenizer.build import build_request

    app = make_app(Workspace.at(tmp_path / "ws"))
    async with app.run_test(size=(120, 40)) as pilot:
        for box, texts in (("tok-vocab", ["4", "5", "512", "32768", "32769", "5.5", "x"]),
                           ("tok-sample", ["0", "0.0005", "1", "4096", "4097", "nan", "-1", "x"])):
            for text in texts:
                await focus(pilot, app, box)
                await type_into(pilot, text)
                await pilot.pause()
                field = app.query_one(f"#{box}", Input)
                held = field.value  # what the box let through (an integer box takes no ".")
                vocab, sample = (held, "1") if box == "tok-vocab" else ("512", held)
                try:
                    build_request("stories.txt", vocab, sample, True)
                    refusal = None
                except WorkbenchError as e:
                    refusal = str(e)
                result = field.validate(field.value)
                assert field.is_valid == (refusal is None), (box, text, refusal)
                if refusal is not None:
                    assert result.failure_descriptions == [refusal]
                if text in ("0.0005", "4097"):  # the engine's bounds, not the box's old ones
                    assert held == text and field.is_valid == (text == "0.0005")


async def test_vocab_browser_search(built_ws, make_app):
    from textual.widgets import DataTable

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#vocab-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 400, what="the vocabulary")
        assert table.get_row_at(0)[0] == "0"
        app.query_one("#tok-views").active = "tok-vocab-tab"
        await focus(pilot, app, "vocab-search")
        await pilot.press(*"the")
        await wait_for(pilot, lambda: 0 < table.row_count < 400, what="filtered rows")
        assert all("the" in table.get_row_at(r)[2].lower() for r in range(table.row_count))


async def test_config_edit_refuse_save(tmp_path, make_app):
    from textual.widgets import Input, Static

    ws = Workspace.at(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        pane = app.query_one("#config-pane")
        await wait_for(pilot, lambda: pane.base is not None, what="the preset to load")
        await focus(pilot, app, "model-n_layers")
        await type_into(pilot, "abc")
        err = app.query_one("#model-n_layers-error", Static)
        await wait_for(pilot, lambda: "model.n_layers = 'abc' is not allowed" in str(err.render()),
                       what="the inline message")
        assert "an integer >= 1" in str(err.render())
        assert not app.query_one("#model-n_layers", Input).is_valid
        await pilot.press("ctrl+s")
        status = app.query_one("#cfg-status", Static)
        await wait_for(pilot, lambda: str(status.render()).startswith("not saved"), what="refusal")
        assert not ws.models_dir().exists() or not list(ws.models_dir().glob("*.yaml"))

        # a cross-field rule: n_heads must divide dim
        await type_into(pilot, "3")
        await focus(pilot, app, "model-n_heads")
        await type_into(pilot, "5")
        # said live beside both fields it involves (not only on save)
        beside = [app.query_one(f"#model-{f}-error", Static) for f in ("n_heads", "dim")]
        await wait_for(pilot, lambda: all("n_heads = 5 is not allowed: it must divide model.dim = 32"
                                          in str(b.render()) and b.display for b in beside),
                       what="the cross-field error beside n_heads and dim")
        assert not app.query_one("#cfg-form-error", Static).display
        await type_into(pilot, "8")
        await wait_for(pilot, lambda: not any(b.display for b in beside), what="the message gone once fixed")
        await focus(pilot, app, "train-batch_size")
        await type_into(pilot, "4")
        await wait_for(pilot, lambda: pane.valid, what="a valid form")
        assert "model.n_layers: 2 → 3" in str(app.query_one("#cfg-diff", Static).render())

        await focus(pilot, app, "cfg-save-name")
        await type_into(pilot, "mine")
        await pilot.press("ctrl+s")
        path = ws.models_dir() / "mine.yaml"
        await wait_for(pilot, path.is_file, what="the saved YAML")
        saved = read_config(path)
        shown = pane.values()
        assert saved.model.to_dict() == shown["model"]
        assert saved.train.to_dict() == shown["train"]
        assert saved.model.n_layers == 3 and saved.model.n_heads == 8 and saved.train.batch_size == 4


async def _quit_during_a_build(ws_root, big, make_app) -> list:
    """Start a build of ``big`` by keys, quit (ctrl+q, y) once the child reports progress; what
    the workspace's tokenizers folder holds afterwards."""
    app = make_app(Workspace.at(ws_root))
    async with app.run_test(size=(120, 40)) as pilot:
        await focus(pilot, app, "tok-data")
        await type_into(pilot, str(big))
        await focus(pilot, app, "tok-vocab")
        await pilot.press("ctrl+e", "ctrl+u", *"20000")
        await pilot.press("ctrl+b")
        pane = app.query_one("#tokenizer-pane")
        await wait_for(pilot, lambda: pane._worker is not None and pane.building, what="the build")
        status = app.query_one("#tok-status")
        await wait_for(pilot, lambda: "reading sample" in str(status.render())
                       or "merging" in str(status.render()), what="the child's progress")
        assert pane.building
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running or app._exit_renderables is not None
                       or app.return_code is not None, what="the app to exit", timeout=15)
    assert app.return_code == 0
    tok_dir = Path(ws_root) / "tokenizers"
    return sorted(tok_dir.iterdir()) if tok_dir.exists() else []


async def test_quit_while_building_stops_it(tmp_path, story_file, make_app):
    """Quitting mid-build kills the child and leaves nothing behind, not even its temp folder.
    The build takes a few seconds; where a slow test process answers the question only after
    the child finished, the tokenizer is whole (never half-written) and the quit is tried again
    in a fresh workspace, until one quit lands while the child still runs."""
    from workbench.tokenizer.tokenizer import load_tokenizer

    big = write_big_corpus(tmp_path / "big.txt", mbytes=48)  # seconds of work, even on a quiet machine
    for attempt in range(4):
        root = tmp_path / f"ws{attempt}"
        leftovers = await _quit_during_a_build(root, big, make_app)
        if not leftovers:
            return  # cancelled: nothing behind
        assert [p.name for p in leftovers] == ["big-20000"], leftovers  # no temp folder, no lock
        assert load_tokenizer(Workspace.at(root), "big-20000").vocab_size == 20000  # finished first: whole
    raise AssertionError("in 4 tries the build always finished before the quit was answered")
