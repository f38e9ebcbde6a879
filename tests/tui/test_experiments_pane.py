"""The Config pane offers a variant an experiment file registered (its select lists it, and the
form takes it)."""

from __future__ import annotations

import pytest

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
