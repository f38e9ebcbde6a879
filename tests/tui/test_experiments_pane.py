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
