"""The Config pane offers a variant an experiment file registered (its select lists it, and the
form takes it)."""

from __future__ import annotations

import pytest

from helpers import WIDE
from workbench.experiments.loader import load_experiments


pytestmark = pytest.mark.usefixtures("clean_registry")


async def test_the_config_pane_offers_a_registered_variant(built_ws, make_app, tmp_path):
    from textual.widgets import Select

    from helpers import MINE, open_config_pane

    folder = tmp_path / "exps"
    folder.mkdir()
    (folder / "mine.py").write_text(MINE)
    assert load_experiments([folder]).registered == [("mlp", "mine", "mine.py")]
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_config_pane(pilot, app)
        select = pane.query_one("#model-mlp", Select)
        assert ("mine (experiment)", "mine") in [(str(label), value) for label, value in select._options]
        select.value = "mine"
        await pilot.pause()
        assert pane.valid


async def test_a_variants_own_field_is_a_form_row_while_it_is_chosen(built_ws, make_app, tmp_path):
    from textual.widgets import Input, Select

    from helpers import focus, open_config_pane, type_into, wait_for

    folder = tmp_path / "exps"
    folder.mkdir()
    (folder / "wide.py").write_text(WIDE)
    load_experiments([folder])
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_config_pane(pilot, app)
        assert not pane.query("#model-wide")
        pane.query_one("#model-mlp", Select).value = "wide"
        await wait_for(pilot, lambda: pane.query("#model-wide"), what="the option's row")
        box = pane.query_one("#model-wide", Input)
        assert box.value == "2"  # its default
        await focus(pilot, app, "model-wide")
        await type_into(pilot, "17")
        await wait_for(pilot, lambda: not pane.valid, what="the range check")
        assert "model.wide = '17' is not allowed" in str(pane.query_one("#model-wide-error").render())
        await type_into(pilot, "3")
        await wait_for(pilot, lambda: pane.valid, what="a valid form")
        model, _ = pane.current()
        assert model.mlp == "wide" and model.wide == 3
        assert "hidden units per model dimension" in str(pane.query_one("#cfg-help").render())  # its help
        # another MLP: the row goes and the config holds no stray option; back: the typed value
        pane.query_one("#model-mlp", Select).value = "gelu"
        await wait_for(pilot, lambda: not pane.query("#model-wide"), what="the row to go")
        await pilot.pause()
        assert pane.valid and pane.current()[0].options == ()
        pane.query_one("#model-mlp", Select).value = "wide"
        await wait_for(pilot, lambda: pane.query("#model-wide"), what="the row again")
        assert pane.query_one("#model-wide", Input).value == "3"


async def test_reload_reads_the_experiments_folder_again(built_ws, make_app):
    from textual.widgets import Select

    from helpers import open_config_pane, wait_for

    folder = built_ws.root / "experiments"
    folder.mkdir(exist_ok=True)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_config_pane(pilot, app)
        status = pane.query_one("#cfg-status")
        (folder / "wide.py").write_text(WIDE)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "new: mlp 'wide'" in str(status.render()), what="the new variant said")
        select = pane.query_one("#model-mlp", Select)
        assert ("wide (experiment)", "wide") in [(str(label), value) for label, value in select._options]
        select.value = "wide"
        await wait_for(pilot, lambda: pane.query("#model-wide"), what="the option's row")
        # the file breaks: one line naming its file and line; its variant is gone and the form
        # falls back to the default MLP instead of holding a name nothing builds
        (folder / "wide.py").write_text(WIDE + "\nraise ValueError('oops')\n")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "gone: mlp 'wide'" in str(status.render()), what="the gone variant said")
        text = str(status.render())
        assert "wide.py:" in text and "ValueError: oops" in text
        assert select.value == "swiglu" and not pane.query("#model-wide")
        await pilot.pause()
        assert pane.valid


async def test_a_run_from_another_workspace_shows_its_code_and_runs_it_only_after_a_yes(
        built_ws, make_app, tmp_path, monkeypatch):
    import os
    import shutil

    from textual.widgets import TabbedContent

    from helpers import MINE, tiny_run_config, wait_for
    from workbench.experiments import registry
    from workbench.tui.widgets.modals import ConfirmScreen
    from workbench.tokenizer.tokenizer import tokenizer_info
    from workbench.training.trainer import Trainer
    from workbench.workspace import Workspace

    folder = tmp_path / "exps"
    folder.mkdir()
    (folder / "mine.py").write_text(MINE)
    load_experiments([folder])
    elsewhere = Workspace.at(tmp_path / "elsewhere")
    shutil.copytree(built_ws.root, elsewhere.root)
    cfg = tiny_run_config()
    cfg.model = cfg.model.replace(mlp="mine")
    cfg.train = cfg.train.replace(max_steps=2)
    data = tokenizer_info(elsewhere, "stories-400").settings["data"]
    assert Trainer.new(elsewhere, cfg, "stories-400", data, name="theirs").run()["state"] == "finished"
    shutil.copytree(elsewhere.run_path("theirs"), built_ws.run_path("theirs"))  # a run folder sent over
    registry.unregister_source(str((folder / "mine.py").resolve()))
    marker = tmp_path / "marker"
    monkeypatch.setenv("EXPERIMENT_MARKER", str(marker))  # importing the run's copy writes it
    monkeypatch.delenv("WORKBENCH_TRUST_CODE", raising=False)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        pane = app.query_one("#runs-pane")
        await wait_for(pilot, lambda: pane.loaded and pane.query_one("#runs-table").row_count == 1, what="the run")
        pane.query_one("#runs-table").focus()
        await pilot.press("ctrl+t")  # trace it
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        from rich.console import Console

        assert "holds experiment code made in another workspace" in app.screen.question
        console = Console(width=400, record=True, file=open(os.devnull, "w"))
        console.print(app.screen.detail)  # what the dialog shows to read: the run's copy of the file
        shown = console.export_text()
        assert str(built_ws.run_path("theirs") / "experiments" / "mine.py") in shown
        assert '@register("mlp", "mine"' in shown
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="the answer")
        assert not marker.exists() and app.query_one("#panes", TabbedContent).active == "runs"
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.query_one("#panes", TabbedContent).active == "trace", what="the Trace pane")
        await pilot.press("ctrl+g")
        trace = app.query_one("#trace-pane")
        await wait_for(pilot, lambda: marker.exists() and not trace.tracing, timeout=60, what="the trace")
        assert marker.read_text() == "ran"
