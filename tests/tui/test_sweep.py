"""A sweep started from the Runs pane (ctrl+w): a bad grid is named in the dialog and nothing
trains; a good one trains every combination with the real engine (`workbench train` processes,
as `workbench sweep`), the runs appear in the table ranked by bits per byte, and the status says
which won."""

from __future__ import annotations

from textual.widgets import Input, Select, Static

from helpers import wait_for


async def _dialog(pilot, app):
    from workbench.tui.widgets.sweep_dialog import SweepScreen

    await pilot.press("6")
    pane = app.query_one("#runs-pane")
    await wait_for(pilot, lambda: pane.loaded, what="the runs table")
    await pilot.press("ctrl+w")
    await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), what="the sweep dialog")
    return pane, app.screen


def _fill(dialog, base: str, budget: str, amount: str, name: str) -> None:
    dialog.query_one("#sweep-base", Select).value = base
    dialog.query_one("#sweep-budget", Select).value = budget
    dialog.query_one("#sweep-amount", Input).value = amount
    dialog.query_one("#sweep-name", Input).value = name


async def test_a_sweep_from_the_runs_pane(built_ws, make_app, story_file):
    from workbench.runs.folder import get_run, list_runs

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, dialog = await _dialog(pilot, app)
        assert dialog.query_one("#sweep-tokenizer", Select).value == "stories-400"
        assert dialog.query_one("#sweep-data", Input).value == str(story_file)  # what the tokenizer was built on
        _fill(dialog, "debug", "steps", "4", "sw")

        # a value the field does not allow: named in the dialog, which stays open; nothing trains
        dialog.query_one("#sweep-grid", Input).value = "model.dim=16,x"
        await pilot.press("enter")
        error = dialog.query_one("#sweep-error", Static)
        await wait_for(pilot, lambda: "model.dim = 'x' is not allowed" in str(error.render()), what="the refusal")
        assert app.screen is dialog and not list_runs(built_ws)

        dialog.query_one("#sweep-grid", Input).value = "train.lr=0.001,0.01 model.max_seq_len=32"
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.sweeping == "sw", what="the sweep to start")
        assert pane.busy_text().startswith("Sweep sw is running")
        await wait_for(pilot, lambda: pane.sweeping is None, timeout=240, what="the sweep to finish")
        status = str(pane.query_one("#runs-status", Static).render())
        runs = {r.name: r for r in list_runs(built_ws)}
        assert set(runs) == {"sw-1", "sw-2"}
        bpb = {n: r.summary()["best_bpb"] for n, r in runs.items()}
        best = min(bpb, key=bpb.get)
        assert status.startswith(f"sweep sw: best {best} at {bpb[best]:.4f} bits/byte"), status
        # the tokenizer set the vocab; each run kept its own learning rate and the shared override
        assert {get_run(built_ws, n).config().train.lr for n in runs} == {0.001, 0.01}
        assert all(r.config().model.vocab_size == 400 and r.config().model.max_seq_len == 32 for r in runs.values())
        # ranked best first, as the sweep printed them
        await wait_for(pilot, lambda: [r["name"] for r in pane.rows] == sorted(bpb, key=bpb.get),
                       what="the table ranked by bits per byte")
        assert pane.sort == "bpb"
        await pilot.press("ctrl+s")  # the order dialog, on bits per byte (the order now): up to name
        from workbench.tui.widgets.metric_dialogs import SortScreen

        await wait_for(pilot, lambda: isinstance(app.screen, SortScreen), what="the order dialog")
        await pilot.press("up", "enter")
        assert pane.sort == "name" and [r["name"] for r in pane.rows] == ["sw-1", "sw-2"]


async def test_stopping_a_sweep_keeps_a_checkpoint(built_ws, make_app):
    from workbench.runs.folder import get_run

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, dialog = await _dialog(pilot, app)
        _fill(dialog, "debug", "steps", "100000", "long")
        dialog.query_one("#sweep-grid", Input).value = "train.lr=0.001,0.002 train.log_interval=1"
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.sweeping == "long", what="the sweep to start")
        await wait_for(pilot, lambda: built_ws.run_path("long-1").is_dir()
                       and get_run(built_ws, "long-1").metrics(), timeout=120, what="the first run's steps")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: pane.sweeping is None, timeout=180, what="the sweep to stop")
        status = pane.query_one("#runs-status", Static)
        assert "sweep long: sweep 'long' was cancelled" in str(status.render())
        run = get_run(built_ws, "long-1")
        assert run.status()["state"] == "stopped" and run.latest_checkpoint() is not None
        assert not built_ws.run_path("long-2").exists()  # never started
