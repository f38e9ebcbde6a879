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


def test_runs_panels_snapshot(snap_compare, snapshot_size, built_ws, make_app):
    """The metric grid (m): four panels of both runs, smoothed at 0.5, at both sizes."""
    _two_runs(built_ws)

    async def run_before(pilot):
        from textual.widgets import SelectionList

        pane = await _open(pilot, pilot.app)
        await pilot.press("space", "down", "space", "greater_than_sign", "m")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen.focused, SelectionList), what="the picker")
        picker = pilot.app.screen.query_one(SelectionList)
        listed = [picker.get_option_at_index(i).value for i in range(picker.option_count)]
        for metric in ("loss", "lr", "val_loss", "top1"):
            picker.highlighted = listed.index(metric)
            await pilot.press("space")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(pane.query(".runs-panel")) == 4, what="the grid")
        await pilot.pause(0.3)

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


def _ema(ys: list[float], w: float) -> list[float]:
    """The debiased EMA written out as the weighted mean it is (not runs.smooth's recurrence)."""
    return [sum((1 - w) * w ** (n - i) * ys[i] for i in range(n + 1)) / (1 - w ** (n + 1)) if w else ys[n]
            for n in range(len(ys))]


def _logged(ws, run: str) -> list[dict]:
    import json

    return [json.loads(line) for line in (ws.run_path(run) / "metrics.jsonl").read_text().splitlines()]


async def _open_n(pilot, app, n: int):
    await pilot.press("6")
    pane = app.query_one("#runs-pane")
    await wait_for(pilot, lambda: pane.loaded and pane.query_one("#runs-table").row_count == n, what=f"{n} runs")
    pane.query_one("#runs-table").focus()
    return pane


async def test_pins_list_first_and_stay_drawn_under_a_filter(built_ws, make_app):
    """p pins the cursor's run (labels.json): it moves to the top, marked, and the overlay keeps
    drawing it while the filter hides it from the table; p again unpins it."""
    import json

    from helpers import type_into
    from workbench.tui.panes.runs import PIN

    for name in ("alpha", "beta", "gamma"):
        train_run(built_ws, name, lr=1e-3, steps=4)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _open_n(pilot, app, 3)
        table = pane.query_one("#runs-table")
        curves = pane.query_one("#runs-curves")
        await pilot.press("down", "down", "p")  # gamma
        await wait_for(pilot, lambda: [r["name"] for r in pane.rows][0] == "gamma", what="the pin")
        assert json.loads((built_ws.run_path("gamma") / "labels.json").read_text())["pinned"] is True
        assert [table.get_row_at(i)[:2] for i in range(3)] == [[PIN, "gamma"], ["", "alpha"], ["", "beta"]]
        assert pane.cursor_run == "gamma"
        await pilot.press("down", "space")  # alpha selected: gamma (pinned) and alpha drawn
        assert [s.label for s in curves.series] == ["gamma", "alpha"]
        await pilot.press("slash")
        await type_into(pilot, "^alpha$")
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 1, what="the filter")
        assert [r["name"] for r in pane.visible_rows()] == ["alpha"]
        assert [s.label for s in curves.series] == ["gamma", "alpha"]  # hidden from the table, still drawn
        assert "1 of 3 runs (and 1 pinned, still drawn)" in str(pane.query_one("#runs-status").render())
        await pilot.press("slash", "ctrl+u", "enter")
        await wait_for(pilot, lambda: table.row_count == 3, what="no filter")
        assert pane.cursor_run == "alpha"  # where it was
        await pilot.press("up", "p")  # gamma, at the top: unpinned, back in name order
        await wait_for(pilot, lambda: [r["name"] for r in pane.rows] == ["alpha", "beta", "gamma"], what="the unpin")
        assert "pinned" not in json.loads((built_ws.run_path("gamma") / "labels.json").read_text())
        assert [s.label for s in curves.series] == ["alpha"]


async def test_panel_picker_lists_the_logged_metrics_and_sorts_by_a_smoothed_one(built_ws, make_app):
    """m lists exactly the metrics the shown runs logged in metrics.jsonl (read here) and the grid
    draws the ticked ones, each run's points in each; ctrl+s orders the table by a metric's last
    smoothed value, checked against an EMA computed here at the pane's smoothing."""
    from textual.widgets import OptionList, SelectionList

    from workbench.tui.widgets.charts import LineChart

    runs = {"r-slow": 1e-4, "r-mid": 1e-3, "r-fast": 3e-3}
    for name, lr in runs.items():
        train_run(built_ws, name, lr=lr)
    skip = {"step", "tokens", "elapsed", "progress", "val_tokens"}  # x positions and bookkeeping
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _open_n(pilot, app, 3)
        await pilot.press("space", "down", "space")  # r-fast and r-mid: the shown runs
        shown = pane.shown_runs()
        assert shown == ["r-fast", "r-mid"]
        logged = {k for n in shown for r in _logged(built_ws, n) if r["kind"] in ("train", "eval")
                  for k, v in r.items() if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert {"loss", "lr", "grad_norm", "tok_s", "val_loss", "bpb", "top1", "top5"} <= logged
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, SelectionList), what="the picker")
        picker = app.screen.query_one(SelectionList)
        listed = [picker.get_option_at_index(i).value for i in range(picker.option_count)]
        assert sorted(listed) == sorted(logged) and not picker.selected
        for metric in ("grad_norm", "top5"):
            picker.highlighted = listed.index(metric)
            await pilot.press("space")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(pane.query(".runs-panel")) == 2 and pane.view == "panels", what="the grid")
        await pilot.pause(0.2)
        charts = list(pane.query(".runs-panel").results(LineChart))
        assert [c.name for c in charts] == ["grad_norm", "top5"]
        assert charts[0].parent is charts[1].parent  # two columns at 120 wide
        assert pane.query_one("#runs-grid").display and not pane.query_one("#runs-charts").display
        for chart in charts:
            assert [s.label for s in chart.series] == shown
            for s in chart.series:
                assert s.ys == pytest.approx([r[chart.name] for r in _logged(built_ws, s.label) if chart.name in r])

        await pilot.press("greater_than_sign", "greater_than_sign")  # 0 -> 0.5 -> 0.6
        assert pane.smoothing == 0.6 and all("ema 0.60" in c.title for c in charts)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, OptionList), what="the sort dialog")
        options = app.screen.query_one(OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert ids[:2] == ["name", "bpb"] and {"loss:last", "top1:best"} <= set(ids)
        options.highlighted = ids.index("loss:last")
        await pilot.press("enter")
        last = {n: _ema([r["loss"] for r in _logged(built_ws, n) if r["kind"] == "train"], 0.6)[-1] for n in runs}
        want = sorted(runs, key=lambda n: last[n])
        await wait_for(pilot, lambda: [r["name"] for r in pane.rows] == want, what="the order")
        table = pane.query_one("#runs-table")
        assert [float(table.get_row_at(i)[2]) for i in range(3)] == pytest.approx([last[n] for n in want], rel=1e-3)
        assert str(table.ordered_columns[2].label) == "loss last"


async def test_smoothing_and_outlier_keys_change_the_runs_charts(built_ws, make_app):
    """> and < smooth the overlay and the panels (a debiased EMA, checked against one computed
    here; the weight in the titles); the y-range ignores an injected spike, marked on its edge,
    until o."""
    import json

    from textual.widgets import SelectionList

    from workbench.tui.widgets.charts import LineChart

    write_run(built_ws, "spiky", scale=1.0)
    path = built_ws.run_path("spiky") / "metrics.jsonl"
    rows = _logged(built_ws, "spiky")
    spike = next(r for r in rows if r["kind"] == "train" and r["step"] == 100)
    spike["loss"] = 50.0
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    vals = [r["val_loss"] for r in rows if r["kind"] == "eval"]
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _open_n(pilot, app, 1)
        curves = pane.query_one("#runs-curves", LineChart)
        assert curves.series[0].ys == vals and "ema" not in curves.title  # raw at first
        await pilot.press("greater_than_sign")
        assert pane.smoothing == 0.5 and "ema 0.50" in curves.title
        assert curves.series[0].ys == pytest.approx(_ema(vals, 0.5), rel=1e-12)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, SelectionList), what="the picker")
        picker = app.screen.query_one(SelectionList)
        picker.highlighted = [picker.get_option_at_index(i).value for i in range(picker.option_count)].index("loss")
        await pilot.press("space", "enter")
        await wait_for(pilot, lambda: len(pane.query(".runs-panel")) == 1, what="the loss panel")
        await pilot.pause(0.2)
        loss = pane.query_one(".runs-panel", LineChart)
        assert loss.series[0].ys == pytest.approx(_ema(losses, 0.5), rel=1e-12)
        assert loss.clip_outliers and loss.y_range is not None and loss.y_range[1] < 10 and loss.clipped >= 1
        await pilot.press("o")
        assert not loss.clip_outliers and loss.y_range is None and loss.clipped == 0
        await pilot.press("o", "less_than_sign")
        assert pane.smoothing == 0.0 and loss.series[0].ys == losses and "ema" not in loss.title
        assert loss.y_range is not None and loss.y_range[1] < 10 and loss.clipped >= 1  # raw, the spike out too
        await pilot.press("ctrl+f")  # back to the overlay, raw again
        assert pane.view == "curves" and curves.series[0].ys == vals and "ema" not in curves.title
