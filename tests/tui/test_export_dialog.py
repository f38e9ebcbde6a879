"""The Runs pane's export dialog, by keyboard: every format offered, the best one picked, the
ones a config rules out disabled with the reason, a format's option, the export written by the
engine; replacing an earlier export only when asked. And the Chat pane's empty prompt, which
starts from BOS alone (as llama2.c's run.c does without a prompt)."""

from __future__ import annotations

import pytest

from workbench.runs import checkpoint
from workbench.export import read_marker

from helpers import focus, type_into, wait_for
from helpers import TINY_RUN, copy_ws, tiny_run_root


@pytest.fixture
def trained_ws(tmp_path_factory, built_root, story_file, tmp_path):
    return copy_ws(tiny_run_root(tmp_path_factory, built_root, story_file), tmp_path)


def add_gpt_run(ws, name="gpt-run"):
    """A GPT-2 style run (gelu, layernorm, learned positions): only plain weights can hold it."""
    from workbench.config.schema import Config, ModelConfig
    from workbench.model import build_model
    from workbench.runs.folder import create_run

    cfg = ModelConfig(vocab_size=400, dim=32, n_layers=1, n_heads=4, max_seq_len=32, mlp="gelu",
                      norm="layernorm", pos="learned")
    run = create_run(ws, name, Config(cfg), ws.tokenizer_path("stories-400"), {"name": "none"})
    checkpoint.save_checkpoint(run.path, 1, build_model(cfg, seed=0), {"step": 1}, keep_last=1)


async def open_dialog(pilot, app, run: str):
    from workbench.tui.widgets.export_dialog import ExportScreen

    await pilot.press("6")
    pane = app.query_one("#runs-pane")
    await wait_for(pilot, lambda: pane.loaded and pane.cursor_run is not None, what="the runs table")
    table = pane.query_one("#runs-table")
    table.focus()
    while pane.cursor_run != run:
        await pilot.press("down")
    await pilot.press("ctrl+e")
    await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen), what="the export dialog")
    return pane, app.screen


def buttons(screen) -> dict:
    from textual.widgets import RadioButton

    return {b.name: b for b in screen.query(RadioButton)}


async def test_export_dialog_offers_every_format_and_exports_the_chosen_one(trained_ws, make_app):
    app = make_app(trained_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, screen = await open_dialog(pilot, app, TINY_RUN)
        b = buttons(screen)
        assert list(b) == ["hf", "gguf", "llama2c", "weights"]
        assert b["hf"].value and not any(x.disabled for x in b.values())  # a Llama: hf is the best
        assert not screen.query_one("#export-why").display  # nothing ruled out, nothing to explain
        path = screen.query_one("#export-path")
        assert path.value == str(trained_ws.root / "exports" / f"{TINY_RUN}-hf") and app.focused is path

        # pick gguf with the keyboard: the folder follows, the dtype option appears; take f16
        await pilot.press("shift+tab", "down", "space")
        assert b["gguf"].value and screen.format == "gguf"
        assert path.value.endswith(f"{TINY_RUN}-gguf") and screen.query_one("#export-dtype-row").display
        assert not screen.query_one("#export-version-row").display
        await focus(pilot, app, "export-dtype")
        await pilot.press("enter", "down", "enter")
        assert screen.query_one("#export-dtype").value == "f16"
        await focus(pilot, app, "export-path")
        await pilot.press("enter")
        dest = trained_ws.root / "exports" / f"{TINY_RUN}-gguf"
        status = pane.query_one("#runs-status")
        await wait_for(pilot, lambda: "exported" in str(status.render()), what="the export")
        assert f"exported {TINY_RUN} (step_000020, gguf, dtype f16) to {dest}" in str(status.render())
        m = read_marker(dest)
        assert m["format"] == "gguf" and m["options"] == {"dtype": "f16"} and (dest / "model.gguf").is_file()

        # the same folder again: refused, said in place, and kept; replaced when asked to
        before = (dest / "model.gguf").read_bytes()
        pane, screen = await open_dialog(pilot, app, TINY_RUN)
        await pilot.press("shift+tab", "down", "space")
        await focus(pilot, app, "export-path")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "not exported" in str(status.render()), what="the refusal")
        assert "already holds an export" in str(status.render()) and status.has_class("error")
        assert (dest / "model.gguf").read_bytes() == before
        pane, screen = await open_dialog(pilot, app, TINY_RUN)
        await pilot.press("shift+tab", "down", "down", "space")  # llama2c, version 1
        assert screen.format == "llama2c" and screen.query_one("#export-version-row").display
        await focus(pilot, app, "export-version")
        await pilot.press("enter", "down", "enter")
        await focus(pilot, app, "export-path")
        await type_into(pilot, str(dest))
        await focus(pilot, app, "export-overwrite")
        await pilot.press("space")
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: "exported" in str(status.render()) and "llama2c" in str(status.render()),
                       what="the replacing export")
        m = read_marker(dest)
        assert m["format"] == "llama2c" and m["options"] == {"version": 1}
        assert sorted(p.name for p in dest.iterdir()) == [".workbench-export.json", "model.bin", "tokenizer.bin"]


async def test_export_dialog_says_why_a_format_cannot_hold_the_run(trained_ws, make_app):
    add_gpt_run(trained_ws)
    app = make_app(trained_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        pane, screen = await open_dialog(pilot, app, "gpt-run")
        b = buttons(screen)
        assert [n for n, x in b.items() if x.disabled] == ["hf", "gguf", "llama2c"]
        assert b["weights"].value and screen.format == "weights"
        why = str(screen.query_one("#export-why").render())
        for fmt in ("hf", "gguf", "llama2c"):
            assert f"{fmt}: not possible — mlp is 'gelu'" in why
        assert "norm is 'layernorm'" in why and "pos is 'learned'" in why
        # the disabled ones cannot be picked from the keyboard
        await pilot.press("shift+tab", "up", "space")
        assert screen.format == "weights"
        await pilot.press("escape")
        await pilot.pause()
        assert not (trained_ws.root / "exports").exists()


async def test_chat_pane_empty_prompt_starts_from_bos(trained_ws, make_app):
    from textual.widgets import TextArea

    from workbench.generation.generate import generate, load_for_generation
    from workbench.generation.sampling import SamplingParams

    app = make_app(trained_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        pane = app.query_one("#chat-pane")
        app.query_one("#ch-temp").value = "0"
        app.query_one("#ch-max").value = "24"
        await focus(pilot, app, "ch-prompt")
        app.query_one("#ch-prompt", TextArea).text = ""
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: pane.streams and pane.streams[0].done, what="the reply")
        result = pane.streams[0].result
    model, tok, _, _ = load_for_generation(trained_ws, TINY_RUN, device="cpu")
    assert result.prompt_ids == [tok.bos_id]
    expected = generate(model, tok, "", SamplingParams(max_tokens=24, temperature=0))
    assert result.ids == expected.ids and result.text == expected.text and result.text


def test_export_dialog_snapshot(snap_compare, snapshot_size, built_ws, make_app):
    """Over a run whose numbers and date are fixed (``write_run``); the folder is typed in, as
    the default names this test's temporary workspace."""
    from textual.widgets import Input

    from helpers import write_run

    write_run(built_ws, "base-run", scale=1.0)

    async def run_before(pilot):
        _, screen = await open_dialog(pilot, pilot.app, "base-run")
        screen.query_one("#export-path", Input).value = "exports/base-run-hf"
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)
