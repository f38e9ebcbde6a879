"""A run of two processes (torchrun, DDP over gloo) driven from the Train pane by keys, as one
process is: pause holds both workers, resume goes on, stop ends both at one step with one
checkpoint and the status ``stopped``; then resumed from the app with a larger budget, and
quitting the app stops it the same way (a checkpoint at the last step, nothing left running)."""

from __future__ import annotations

import os

import psutil

from workbench.runs.folder import get_run, list_runs
from workbench.training import health
from workbench.training.follower import ChildRun

from helpers import focus, type_into, wait_for
from .test_train_pane import _form, _train_pane

SLOW = 180  # seconds: torchrun starts two torch processes on a busy 2-core machine


def _steps(ws, name):
    return [r["step"] for r in get_run(ws, name).metrics() if r.get("kind") == "train"]


def _workers():
    return [p for p in psutil.Process(os.getpid()).children(recursive=True) if "torch" in " ".join(p.cmdline())]


async def _start_two(pilot, app):
    """A long run of two processes started from the Train pane by keys; the pane once it runs."""
    await _form(pilot, app, **{"model-vocab_size": "400", "train-num_threads": "1", "train-max_steps": "100000",
                               "train-eval_interval": "100000", "train-checkpoint_interval": "100000",
                               "train-log_interval": "1", "train-health_interval": "2"})
    pane = await _train_pane(pilot, app)
    await focus(pilot, app, "train-procs")
    await type_into(pilot, "2")
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: isinstance(pane.job, ChildRun), what="torchrun to start")
    return pane


async def test_two_processes_pause_resume_stop_resume_and_quit(built_ws, make_app, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _start_two(pilot, app)
        job = pane.job
        name = job.run_name
        await wait_for(pilot, lambda: pane.current_step >= 3, timeout=SLOW,
                       what=f"the first steps ({pane.state}: {pane.query_one('#train-error').render()})")
        assert "2 process(es)" in "\n".join(pane.notices)
        # rank 0's health records reach the pane through the run folder, as the metrics do
        await wait_for(pilot, lambda: pane.health_rows, timeout=60, what="a health record")
        on_disk = health.read_health(get_run(built_ws, name).path)
        assert [r["step"] for r in pane.health_rows] == [r["step"] for r in on_disk][:len(pane.health_rows)]
        assert all(r["step"] % 2 == 0 and len(r["update_ratio"]) == 2 for r in pane.health_rows)

        # pause: both workers wait (rank 0 would log any step either took, as all ranks step together)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: pane.state == "paused", timeout=60, what="the pause")
        assert get_run(built_ws, name).status()["state"] == "paused"
        held, polls = _steps(built_ws, name), job.polls
        await wait_for(pilot, lambda: job.polls >= polls + 8, what="two seconds of polls")
        assert _steps(built_ws, name) == held and pane.current_step == held[-1]

        await pilot.press("ctrl+t")  # resume
        await wait_for(pilot, lambda: len(_steps(built_ws, name)) > len(held) + 2, timeout=60, what="steps again")
        assert pane.state == "running"

        await pilot.press("ctrl+g")  # stop: every rank at the same step, one checkpoint
        await wait_for(pilot, lambda: not pane.running, timeout=SLOW, what="the stop")
        assert pane.state == "stopped", str(pane.query_one("#train-error").render())
        run = get_run(built_ws, name)
        last = _steps(built_ws, name)[-1]
        assert run.status()["state"] == "stopped" and run.status()["step"] == last
        assert run.checkpoints() == [f"step_{last:06d}"]
        assert f"stopped: step {last}" in "\n".join(pane.notices)

        # resume it from the app, with a larger budget, still on two processes
        pane.query_one("#train-resume").value = name
        await wait_for(pilot, lambda: pane.query_one("#train-budget").value == "100000", what="the run's budget")
        await focus(pilot, app, "train-budget")
        await type_into(pilot, "200000")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(pane.job, ChildRun) and pane.job is not job, what="the resume")
        await wait_for(pilot, lambda: pane.current_step >= last + 3, timeout=SLOW, what="steps after the resume")

        # quit while it trains: asked, then stopped after a step with a checkpoint
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None, timeout=SLOW, what="the app to exit")
    run = get_run(built_ws, name)
    final = _steps(built_ws, name)[-1]
    assert final >= last + 3
    assert run.status()["state"] == "stopped" and run.status()["step"] == final
    assert run.latest_checkpoint() == f"step_{final:06d}"
    resume = run.raw_config()["resumes"][-1]
    assert resume["changes"] == {"train.max_steps": [100000, 200000]} and resume["step"] == last
    assert [r.name for r in list_runs(built_ws)] == [name]
    assert _workers() == []


async def test_an_app_that_ends_any_other_way_stops_the_workers_and_keeps_a_checkpoint(built_ws, make_app,
                                                                                      monkeypatch):
    # not through ctrl+q: the app is closed (as a test harness, or a closed terminal, does),
    # after its panes are gone; the run still stops after a step with a checkpoint
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await _start_two(pilot, app)
        name = pane.job.run_name
        await wait_for(pilot, lambda: pane.current_step >= 3, timeout=SLOW, what="the first steps")
    assert _workers() == []
    run = get_run(built_ws, name)
    last = _steps(built_ws, name)[-1]
    assert run.status()["state"] == "stopped" and run.status()["step"] == last
    assert run.latest_checkpoint() == f"step_{last:06d}"
