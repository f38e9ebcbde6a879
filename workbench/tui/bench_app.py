"""The benchmark's app task: training inside the app against headless training, and key latency.

    python -m workbench.tui.bench_app app ARGS.json OUT.json

Run by ``workbench bench`` in a child process (this is the one task that needs Textual, so it
lives in ``workbench/tui``). Alternating repetition by repetition:
- headless: a ``workbench train`` process on the same config, data and tokenizer;
- in the app: ``WorkbenchApp.run_test`` (a headless terminal, 140x44); the Train pane starts the
  same config with ctrl+r. For the first half of the steps the app is only watched (the first
  quarter is left out as warm-up on both sides); in the second half a key is pressed every 0.25 s (ctrl+y log-y, ctrl+n x axis, alternating), posted
  through the driver like a real key. Latency = from posting the key to its action running
  ("action"), and to the loss chart being drawn again ("painted").
Tokens/s is the median of the logged windows of each part, so the app's watched part and its
busy half each have a headless counterpart.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from ..bench.measure import PhasePeak
from ..bench.tasks import child_main, say
from ..config import load_config, save_config
from ..workspace import Workspace

CONFIG = "bench-app"


def _halves(rows: list[dict], steps: int) -> tuple[float, float]:
    """Median tokens/s of the logged windows in the second quarter of the run (the first quarter
    is warm-up on both sides) and in its second half."""
    rows = [r for r in rows if r.get("tok_s")]
    half = steps // 2
    first = [r["tok_s"] for r in rows if steps // 4 < r["step"] <= half]
    second = [r["tok_s"] for r in rows if r["step"] > half]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return med(first), med(second)


def _headless(ws: Workspace, a: dict, rep: int) -> tuple[float, float, float]:
    """A real ``workbench train`` process on the same config: its two halves' tokens/s and its
    peak RSS. (In its own process, as a user runs it: torch's OpenMP pool belongs to one thread.)"""
    from ..bench.measure import run_measured
    from ..runs import get_run

    name = f"bench-headless-{rep}"
    code, _, rss, err = run_measured([sys.executable, "-m", "workbench", "--workspace", str(ws.root), "train",
                                      "--config", CONFIG, "--tokenizer", a["tokenizer"], "--data", a["text_dir"],
                                      "--name", name])
    if code != 0:
        raise RuntimeError(f"headless workbench train exited with status {code}: {err.strip()[-400:]}")
    first, second = _halves([r for r in get_run(ws, name).metrics() if r.get("kind") == "train"], a["steps"])
    return first, second, rss


async def _wait(pilot, cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


async def _in_app(ws: Workspace, a: dict) -> tuple[tuple[float, float], list[float], list[float]]:
    from textual import events

    from .app import WorkbenchApp
    from .sysinfo import FixedProbe

    app = WorkbenchApp(ws, probe=FixedProbe(), theme="textual-dark")
    action: list[float] = []
    painted: list[float] = []
    lat: list[float] = []
    trip: list[float] = []
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("3")
        pane = app.query_one("#train-pane")
        await _wait(pilot, lambda: pane.query_one("#train-tokenizer").value == a["tokenizer"], 30, "the tokenizer")
        await _wait(pilot, lambda: pane.query_one("#train-data").value, 30, "the data source")
        # as a user would: start once the app has settled (the other panes mount after the first paint)
        from .app import PANES

        await _wait(pilot, lambda: all(app.query(f"#{key}-pane") for key, _ in PANES), 30, "every pane to mount")
        await pilot.pause(1.0)
        pane.query_one("#train-config").value = CONFIG
        pane.query_one("#train-data").value = a["text_dir"]
        for name in ("action_toggle_log_y", "action_next_x_axis"):
            orig = getattr(pane, name)

            def hooked(orig=orig):
                action.append(time.perf_counter())
                orig()

            setattr(pane, name, hooked)
        chart = pane.query_one("#chart-loss")
        orig_render = chart.render

        def render():
            painted.append(time.perf_counter())
            return orig_render()

        chart.render = render
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: pane.running or pane.state not in ("idle",), 60, "training to start")
        i = 0
        every = a.get("key_interval", 0.25)
        while pane.running:
            await asyncio.sleep(every or 0.05)
            if not every or not pane.history.train:  # measure while steps run, not during setup
                continue
            n, m = len(action), len(painted)
            key = events.Key("ctrl+y" if i % 2 == 0 else "ctrl+n", None)
            key.set_sender(app)
            t0 = time.perf_counter()
            app._driver.send_message(key)  # the path a real key press takes
            i += 1
            while (len(action) == n or len(painted) == m) and time.perf_counter() - t0 < 5:
                await asyncio.sleep(0.001)
            if len(action) > n and len(painted) > m:
                lat.append((action[-1] - t0) * 1000)
                trip.append((painted[-1] - t0) * 1000)
        if pane.state != "finished":
            raise RuntimeError(f"training in the app ended {pane.state!r}: {pane.query_one('#train-error').render()}")
        return _halves(pane.history.train, a["steps"]), lat, trip


def task_app(a: dict) -> dict:
    ws = Workspace.at(a["workspace"])
    cfg = load_config(a["preset"], ws)
    cfg.model = cfg.model.replace(vocab_size=a["vocab"])
    cfg.train = cfg.train.replace(max_steps=a["steps"], eval_interval=10**9, checkpoint_interval=10**9,
                                  device="cpu", max_tokens=None, max_minutes=None)
    cfg.name = CONFIG
    save_config(ws.models_dir(create=True) / f"{CONFIG}.yaml", cfg)
    out: dict[str, Any] = {"preset": a["preset"], "steps": a["steps"], "vocab": a["vocab"],
                           "tok_s": {"headless": [], "app": [], "headless_2nd_half": [], "app_keys": []},
                           "latency_ms": [], "painted_ms": [],
                           "rss_mb": {"headless": None, "app": None}}
    for r in range(a["reps"]):
        first, second, rss = _headless(ws, a, r)
        out["tok_s"]["headless"].append(first)
        out["tok_s"]["headless_2nd_half"].append(second)
        out["rss_mb"]["headless"] = max(out["rss_mb"]["headless"] or 0.0, rss)
        with PhasePeak() as pp:
            (watched, busy), lat, trip = asyncio.run(_in_app(ws, a))
        out["rss_mb"]["app"] = max(out["rss_mb"]["app"] or 0.0, pp.mb or 0.0) or None
        out["tok_s"]["app"].append(watched)
        out["tok_s"]["app_keys"].append(busy)
        out["latency_ms"] += lat
        out["painted_ms"] += trip
        say(f"app {r + 1}/{a['reps']}: headless {first:,.0f} tok/s, in the app {watched:,.0f} tok/s watched, "
            f"{busy:,.0f} tok/s with {len(lat)} keys (headless {second:,.0f})")
    out["versions"] = {m: getattr(sys.modules[m], "__version__", "?") for m in ("textual", "torch") if m in sys.modules}
    return out


if __name__ == "__main__":
    sys.exit(child_main({"app": task_app}, sys.argv[1:]))
