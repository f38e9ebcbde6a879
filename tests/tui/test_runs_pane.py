"""The Runs pane with two recorded runs: the table, the overlay, a baseline comparison, rename
and delete by keyboard, and a snapshot."""

from __future__ import annotations

import pytest

from helpers import train_run, write_run
from helpers import type_into, wait_for


def _two_runs(ws):
    write_run(ws, "base-run", scale=1.0, created="2024-01-02T03:04:05")
    write_run(ws, "wide-run", scale=0.9, created="2024-01-03T04:05:06")


async def _open(pilot, app):
    await pilot.press("6")
    pane = app.query_one("#runs-pane")
    await wait_for(pilot, lambda: pane.loaded and pane.query_one("#runs-table").row_count == 2,
                   what="two runs in the table")
    pane.query_one("#runs-table").focus()
    return pane


async def test_compare_rename_delete(built_ws, make_app):
    """Two runs the real engine trained (base-run barely learns at lr 1e-4; wide-run at 3e-3)."""
    train_run(built_ws, "base-run", lr=1e-4)
    train_run(built_ws, "wide-run", lr=3e-3)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _open(pilot, app)
        from workbench.runs.folder import get_run
        params = get_run(built_ws, "base-run").summary()["params"]
        rows = [pane.query_one("#runs-table").get_row_at(i)[1:5] for i in range(2)]
        assert rows == [[n, "debug", f"{params / 1000:.1f}K", "2.6K"] for n in ("base-run", "wide-run")]  # 20 x 4 x 32 tokens
        await pilot.press("ctrl+b", "down", "space")
        assert pane.baseline == "base-run" and pane.selected == {"wide-run"}
        assert [s.label for s in pane.query_one("#runs-curves").series] == ["base-run", "wide-run"]
        diff = pane.query_one("#runs-diff").series
        assert len(diff) == 1 and all(d < 0 for d in diff[0].ys)  # wide-run is lower everywhere
        reach = pane.query_one("#runs-reach")
        assert reach.row_count == 2 and reach.get_row_at(0)[2] == "1.00"
        assert float(reach.get_row_at(1)[2]) < 1.0

        await pilot.press("ctrl+n")
        await type_into(pilot, "renamed-run")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "renamed-run" in [r["name"] for r in pane.rows], what="the rename")
        assert not built_ws.run_path("wide-run").exists()

        await pilot.press("ctrl+d")
        await pilot.press("y")
        await wait_for(pilot, lambda: len(pane.rows) == 1, what="the delete")
        assert [r["name"] for r in pane.rows] == ["base-run"]  # the run under the cursor went
        assert not built_ws.run_path("renamed-run").exists() and built_ws.run_path("base-run").is_dir()


def test_runs_pane_snapshot(snap_compare, snapshot_size, built_ws, make_app):
    _two_runs(built_ws)

    async def run_before(pilot):
        await _open(pilot, pilot.app)
        await pilot.press("ctrl+b", "down", "space")
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


async def test_runs_with_one_evaluation_each_are_compared_and_drawn(built_ws, make_app):
    """Runs evaluated once, at the end, at equal tokens (a sweep with a full evaluation): the
    difference chart has one x to draw on its log axis, and draws it; the table has the numbers."""
    from helpers import tiny_run_config
    from workbench.tokenizer.tokenizer import tokenizer_info
    from workbench.training.trainer import Trainer
    from workbench.tui.widgets.charts import LineChart

    data = tokenizer_info(built_ws, "stories-400").settings["data"]
    for name, lr in (("one-a", 1e-3), ("one-b", 3e-3)):
        cfg = tiny_run_config()
        cfg.train = cfg.train.replace(lr=lr, min_lr=lr / 10, max_steps=4, eval_interval=100)
        assert Trainer.new(built_ws, cfg, "stories-400", data, name=name).run()["state"] == "finished"
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _open(pilot, app)
        assert all(len(c) == 1 for c in pane.curves.values())
        await pilot.press("ctrl+b", "down", "space")
        chart = pane.query_one("#runs-diff", LineChart)
        await pilot.pause()
        assert chart.series and "cannot be drawn" not in str(chart.render())
        row = pane.query_one("#runs-reach").get_row_at(1)
        assert row[0] == "one-b" and row[3].startswith(("+", "-")) and row[4].startswith(("+", "-"))
        # the same as CSV: every logged point of both, and one-b − one-a at the baseline's tokens
        import csv

        from workbench.runs.folder import get_run

        await pilot.press("ctrl+x")
        metrics = built_ws.root / "exports" / "one-a-and-1-more-metrics.csv"
        await wait_for(pilot, metrics.exists, what="the CSV")
        rows = list(csv.DictReader(metrics.open()))
        assert len(rows) == sum(len(get_run(built_ws, n).metrics()) for n in ("one-a", "one-b"))
        diff = list(csv.DictReader((built_ws.root / "exports" / "one-a-and-1-more-vs-one-a.csv").open()))
        assert [(r["run"], float(r["val_loss_diff"])) for r in diff] == [
            ("one-b", pytest.approx(pane.curves["one-b"][0][1] - pane.curves["one-a"][0][1]))]


async def test_filter_tags_and_note_by_keys(built_ws, make_app):
    from helpers import type_into

    train_run(built_ws, "alpha", lr=1e-3, steps=4)
    train_run(built_ws, "beta", lr=1e-3, steps=4)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _open(pilot, app)
        table = pane.query_one("#runs-table")
        await pilot.press("down", "t")  # beta
        await type_into(pilot, "exp:vnorm keep")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(r.get("tags") == ["exp:vnorm", "keep"] for r in pane.rows), what="the tags")
        await pilot.press("n")
        await type_into(pilot, "value norm, seed 7")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(r.get("note") == "value norm, seed 7" for r in pane.rows), what="the note")
        await pilot.press("up", "down")  # back on beta: its line has its tags and note
        status = str(pane.query_one("#runs-status").render())
        assert "tags exp:vnorm, keep" in status and "note: value norm, seed 7" in status
        await pilot.press("slash")
        await type_into(pilot, "vnorm")
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 1, what="the filter")
        assert pane.cursor_run == "beta" and "1 of 2 runs" in str(pane.query_one("#runs-status").render())
        await pilot.press("slash", "ctrl+u", "enter")  # empty: every run again
        await wait_for(pilot, lambda: table.row_count == 2, what="no filter")
