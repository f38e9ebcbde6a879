"""The Train pane driven by keys: train the debug preset to completion and see the charts
filled; stop a run mid-way and resume it from the Runs pane; a snapshot from a recorded stream."""

from __future__ import annotations

import math

import pytest

from helpers import train_events
from helpers import focus, type_into, wait_for


async def _form(pilot, app, **fields):
    """Set Config pane fields (section-name ids) by keyboard."""
    await pilot.press("2")
    pane = app.query_one("#config-pane")
    await wait_for(pilot, lambda: pane.base is not None, what="the preset to load")
    for wid, value in fields.items():
        await focus(pilot, app, wid)
        await type_into(pilot, value)
        await pilot.press("ctrl+e", "ctrl+k")
    await wait_for(pilot, lambda: pane.valid, what="a valid form")


async def _train_pane(pilot, app):
    """Switch to the Train pane and wait until its choices are filled in."""
    await pilot.press("escape", "3")
    pane = app.query_one("#train-pane")
    await wait_for(pilot, lambda: pane.query_one("#train-tokenizer").value == "stories-400",
                   what="the tokenizer choice")
    # choosing the tokenizer fills in its data source through a Changed message; starting
    # before that lands would train on the default hub id (offline: a quick failure)
    await wait_for(pilot, lambda: pane.query_one("#train-data").value, what="the data source")
    await wait_for(pilot, lambda: pane.devices, what="the machine's devices")
    return pane


async def _start_from_train_pane(pilot, app):
    """Switch to the Train pane, wait until its choices are filled in, press start."""
    pane = await _train_pane(pilot, app)
    await pilot.press("ctrl+r")
    return pane


async def test_train_debug_to_completion(built_ws, make_app):
    from workbench.runs.folder import list_runs

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        # the debug preset (vocab 512) with one torch thread; the tokenizer (400 pieces) sets the vocab
        await _form(pilot, app, **{"train-num_threads": "1"})
        assert app.query_one("#model-vocab_size").value == "512"
        pane = await _start_from_train_pane(pilot, app)
        try:
            await wait_for(pilot, lambda: pane.running or pane.state != "idle", what="training to start")
        except AssertionError as e:
            raise AssertionError(f"{e}; focused {app.focused!r}; state {pane.state}; "
                                 f"error {pane.query_one('#train-error').render()!s}") from None
        await wait_for(pilot, lambda: not pane.running, timeout=90, what="training to finish")
        assert pane.state == "finished", str(pane.query_one("#train-error").render())
        assert pane.history.train[-1]["step"] == 200
        assert len(pane.history.evals) == 4
        # the charts hold the series they were given and drew them
        loss = pane.query_one("#chart-loss")
        assert [len(s.xs) for s in loss.series] == [40, 40, 4]
        assert all(len(s.xs) == 40 for s in (pane.query_one("#chart-lr").series[0],
                                              pane.query_one("#chart-toks").series[0]))
        header = str(pane.query_one("#train-header").render())
        assert "step 200/200" in header and "tok/s" in header
        assert "samples at step 200" in str(pane.query_one("#train-samples").render())
        # log-y and the x axis by keyboard
        await pilot.press("ctrl+y", "ctrl+n")
        assert pane.log_y and pane.x_mode == "tokens" and loss.log_y
        runs = list_runs(built_ws)
        assert len(runs) == 1 and runs[0].latest_checkpoint() == "step_000200"
        # said in one line, in the app's words, and trained with
        assert "model.vocab_size 512 → 400 from tokenizer stories-400" in pane.notices
        assert runs[0].config().model.vocab_size == 400 and runs[0].config().train.num_threads == 1


async def test_stop_then_resume_from_runs_pane(built_ws, make_app):
    from workbench.runs.folder import list_runs

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await _form(pilot, app, **{"model-vocab_size": "400", "train-num_threads": "1",
                                   "train-max_steps": "100000", "train-eval_interval": "100000"})
        pane = await _start_from_train_pane(pilot, app)
        await wait_for(pilot, lambda: pane.current_step >= 10, timeout=60, what="ten steps")
        await pilot.press("ctrl+t")  # pause, then resume
        await wait_for(pilot, lambda: pane.job.paused, what="pause")
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: not pane.job.paused, what="unpause")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: not pane.running, timeout=30, what="the stop")
        assert pane.state == "stopped"
        stopped_at = pane.current_step
        run = list_runs(built_ws)[0]
        assert run.latest_checkpoint() == f"step_{stopped_at:06d}"

        await pilot.press("6")
        runs = app.query_one("#runs-pane")
        await wait_for(pilot, lambda: runs.cursor_run == run.name, what="the run in the table")
        await pilot.press("ctrl+r")
        assert app.active_pane == "train"
        await wait_for(pilot, lambda: pane.running, what="the resume to start")
        await wait_for(pilot, lambda: pane.current_step >= stopped_at + 5, timeout=60, what="steps after the resume")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: not pane.running, timeout=30, what="the second stop")
        assert pane.state == "stopped"
        log = "\n".join(pane.notices)
        assert f"resumed from step_{stopped_at:06d}" in log
        assert [r.name for r in list_runs(built_ws)] == [run.name]  # the same run went on


def test_train_pane_snapshot(snap_compare, snapshot_size, built_ws, make_app):
    async def run_before(pilot):
        await pilot.press("escape", "3")
        await pilot.app.workers.wait_for_complete()
        pane = pilot.app.query_one("#train-pane")
        pane.query_one("#train-data").value = "stories.txt"
        pane.total_steps = 200
        pane.feed(train_events(120))
        pane.redraw_charts()
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


async def test_a_chart_plotext_cannot_build_says_so_instead_of_crashing(built_ws, make_app, monkeypatch):
    from workbench.tui.widgets.charts import LineChart

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _train_pane(pilot, app)
        chart = pane.query_one("#chart-loss", LineChart)

        def broken():
            raise IndexError("list index out of range")

        monkeypatch.setattr(chart.plt, "build", broken)
        chart.refresh()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()  # the repaint has run (the app would have crashed in it)
        assert "cannot be drawn" in str(chart.render())
        assert app.is_running


def test_smoothing_is_tensorboards_debiased_ema():
    from workbench.runs.smooth import debiased_ema, step

    # by hand, weight 0.5: 0.5*1 / 0.5 = 1; (0.25 + 1) / 0.75; (0.625 + 1.5) / 0.875
    assert debiased_ema([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert debiased_ema([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]  # no smoothing: the raw curve
    nan = float("nan")
    out = debiased_ema([2.0, nan, 4.0], 0.5)  # a non-finite point stays, and stays out of the average
    assert out[0] == 2.0 and math.isnan(out[1]) and out[2] == pytest.approx((0.5 * 1.0 + 2.0) / 0.75)
    assert step(0.9, 1) == 0.95 and step(0.99, 1) == 0.99 and step(0.0, -1) == 0.0 and step(0.5, -1) == 0.0


async def test_keys_change_the_loss_charts_smoothing(built_ws, make_app):
    from workbench.runs.smooth import debiased_ema
    from workbench.tui.widgets.charts import LineChart

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _train_pane(pilot, app)
        pane.feed(train_events(40))
        pane.redraw_charts()
        app.query_one("#panes").focus()  # off the text boxes, as after esc
        await pilot.press("greater_than_sign")
        chart = pane.query_one("#chart-loss", LineChart)
        ema = next(s for s in chart.series if s.label.startswith("ema"))
        assert ema.label == "ema 0.95"
        losses = [r["loss"] for r in pane.history.train]
        assert ema.ys == pytest.approx(debiased_ema(losses, 0.95))
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")
        ema = next(s for s in chart.series if s.label.startswith("ema"))
        assert ema.label == "ema 0.70" and ema.ys == pytest.approx(debiased_ema(losses, 0.7))


def test_the_robust_band_leaves_out_a_spike_and_only_when_there_is_one():
    from workbench.runs.smooth import robust_band

    values = [2.0 + 0.01 * (i % 7) for i in range(60)]
    assert robust_band(values) is None  # nothing outlies: the chart holds every point
    lo, hi = robust_band(values[:30] + [40.0] + values[30:])
    assert max(values) <= hi < 40.0 and lo <= min(values)  # the spike alone is outside
    assert robust_band([1.0, 50.0] * 5) is None  # too few points to tell


async def test_a_spike_does_not_flatten_the_loss_chart(built_ws, make_app):
    from helpers import train_events
    from workbench.training.events import Logged
    from workbench.tui.widgets.charts import LineChart

    events = train_events(200)
    logged = [e for e in events if isinstance(e, Logged)]
    logged[10].row["loss"] = 60.0  # one spike among 40 logged points
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _train_pane(pilot, app)
        pane.feed(events)
        pane.redraw_charts()
        chart = pane.query_one("#chart-loss", LineChart)
        assert chart.y_range is not None and chart.y_range[1] < 60.0 and chart.clipped >= 1
        assert max(r["loss"] for r in pane.history.train if r["loss"] < 60.0) <= chart.y_range[1]
        app.query_one("#panes").focus()
        await pilot.press("o")  # every point again
        assert chart.y_range is None and chart.clipped == 0


async def test_the_panes_letter_keys_type_into_a_text_box_that_has_focus(built_ws, make_app):
    """o, < and > act on the loss chart only when no text box takes them: typed into the data
    box they are text."""
    from textual.widgets import Input

    from helpers import focus, type_into

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _train_pane(pilot, app)
        before = (pane.clip_outliers, pane.history.smoothing)
        await focus(pilot, app, "train-data")
        await type_into(pilot, "o<>")
        assert app.query_one("#train-data", Input).value == "o<>"
        assert (pane.clip_outliers, pane.history.smoothing) == before


def test_the_health_map_colours_each_cell_by_its_value_and_names_a_flagged_layer():
    """Cells on a log scale from the smallest value shown (the palette's first colour) to the
    largest (its last); a layer whose update/weight leaves the band is red, and named."""
    from workbench.tui.widgets.health_map import CELL, PALETTE, render_map

    rows = [{"step": s, "lr": 1e-3, "update_ratio": [1e-4 * 10 ** (s / 10), 2e-3], "grad_norm": [1.0, 1.0],
             "act_rms": [1.0, 1.0], "attn_entropy": [1.0, None]} for s in (10, 20, 30)]
    text = render_map(rows, "update_ratio", width=10, height=10)
    lines = text.plain.splitlines()
    assert lines[0] == "health: update/weight (log10)"
    assert lines[2].startswith("L0  ") and lines[3].startswith("L1  ") and lines[4] == "steps 10–30"
    cells = [(text.plain[s.start:s.end], str(s.style)) for s in text.spans if text.plain[s.start:s.end].startswith(CELL)]
    row0 = [style for plain, style in cells[len(PALETTE):len(PALETTE) + 3]]  # after the scale's swatches
    assert row0[0] == PALETTE[0] and row0[2] == PALETTE[-1]  # 1e-3 is the smallest, 1e-1 ... the largest
    rows[-1]["update_ratio"][0] = 0.5  # diverging at the newest record
    text = render_map(rows, "update_ratio", width=10, height=10)
    assert "! layer 0: update/weight 0.5 > 0.1" in text.plain
    assert any(str(s.style) == "bold red" and text.plain[s.start:s.end].startswith("L0") for s in text.spans)
    # a layer without probabilities (an attention that logs none) is a dot, not a colour
    text = render_map(rows, "attn_entropy", width=10, height=10)
    assert text.plain.splitlines()[3].startswith("L1  ·")


async def test_h_shows_the_runs_health_as_a_heatmap(built_ws, make_app, corpus_dir):
    """A run the engine trained with health records: its history fed to the pane, h switches
    the side charts to each quantity's map over layers × records, and back."""
    from workbench.training.follower import read_history
    from workbench.training.health import QUANTITIES
    from workbench.training.trainer import Trainer
    from workbench.tui.widgets.health_map import HealthMap

    from helpers import tiny_config

    cfg = tiny_config({"n_layers": 3}, max_steps=8, health_interval=2)
    assert Trainer.new(built_ws, cfg, "stories-400", str(corpus_dir), name="hm").run()["state"] == "finished"
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _train_pane(pilot, app)
        pane.feed(read_history(built_ws, "hm"))
        assert [r["step"] for r in pane.health_rows] == [2, 4, 6, 8]
        app.query_one("#panes").focus()
        hm = pane.query_one("#train-health", HealthMap)
        assert not hm.display
        for q in QUANTITIES:
            await pilot.press("h")
            await pilot.pause()
            assert hm.display and hm.quantity == q and not pane.query_one("#chart-lr").display
            plain = hm.render().plain if hasattr(hm.render(), "plain") else str(hm.render())
            assert [line[:2] for line in plain.splitlines()[2:5]] == ["L0", "L1", "L2"], plain
            assert "steps 2–8" in plain
        await pilot.press("h")
        await pilot.pause()
        assert not hm.display and pane.query_one("#chart-lr").display


async def test_m_draws_the_picked_metrics_as_a_grid_of_charts(built_ws, make_app):
    """The picker lists every metric the run logged (train and eval rows), the grid draws the
    ticked ones with the run's values (an eval metric at its evaluations), two columns at 120;
    ticking none brings the loss and side charts back."""
    from textual.widgets import SelectionList

    from helpers import train_events
    from workbench.training.events import Evaluated, Logged
    from workbench.tui.widgets.charts import LineChart

    events = train_events(200)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _train_pane(pilot, app)
        pane.feed(events)
        pane.history.smoothing = 0.0  # raw values, to compare with the rows
        app.query_one("#panes").focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, SelectionList), what="the picker")
        sl = app.screen.query_one(SelectionList)
        listed = [sl.get_option_at_index(i).value for i in range(sl.option_count)]
        assert listed == ["loss", "lr", "grad_norm", "tok_s", "mem", "val_loss", "val_ppl", "bpb", "top1", "top5"]
        for metric in ("loss", "tok_s", "top1"):
            sl.highlighted = listed.index(metric)
            await pilot.press("space")
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.panels == ["loss", "tok_s", "top1"], what="the picked panels")
        await pilot.pause()
        await wait_for(pilot, lambda: len(pane.query(".train-panel")) == 3, what="three charts")
        await pilot.pause()
        pane.redraw_charts()
        charts = {str(c.name): c for c in pane.query(".train-panel").results(LineChart)}
        assert not pane.query_one("#train-charts").display and pane.query_one("#train-grid").display
        rows = pane.query(".train-grid-row")
        assert [len(r.children) for r in rows] == [2, 1]
        logged = [e.row for e in events if isinstance(e, Logged)]
        evals = [e.row for e in events if isinstance(e, Evaluated)]
        assert charts["tok_s"].series[0].ys == [r["tok_s"] for r in logged]
        assert charts["top1"].series[0].xs == [float(r["step"]) for r in evals]
        assert charts["top1"].series[0].ys == [r["top1"] for r in evals]
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, SelectionList), what="the picker again")
        assert sorted(app.screen.query_one(SelectionList).selected) == ["loss", "tok_s", "top1"]
        app.screen.query_one(SelectionList).deselect_all()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not pane.panels, what="no panels")
        assert pane.query_one("#train-charts").display and not pane.query_one("#train-grid").display
