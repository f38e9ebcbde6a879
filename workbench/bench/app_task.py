"""The benchmark's app task: training inside the app against headless training, and key latency.

    python -m workbench.bench.app_task app ARGS.json OUT.json

Run by ``workbench bench`` in a child process. Only ``workbench/tui`` imports Textual: this
module drives the app through ``workbench.tui`` (imported inside the task) and the public API of
``App.run_test``. Alternating repetition by repetition:
- headless: a ``workbench train`` process on the same config, data and tokenizer;
- in the app: ``WorkbenchApp.run_test`` (a headless terminal, 120x40); the Train pane starts the
  same config with ctrl+r. For the first half of the steps the app is only watched (the first
  quarter is left out as warm-up on both sides); in the second half a key is pressed every
  0.25 s (ctrl+y log-y, ctrl+n x axis, alternating), four at 120x40, then four with the
  terminal resized to 80x24, and so on; with ``App.simulate_key``: the Key event a
  terminal's key becomes, posted to the app. Latency = from posting the key to the loss chart
  being set up with the pane's new log-y / x-axis state ("action": the action has run), and to
  that chart's next picture being built ("painted"). Both are seen through
  ``LineChart.add_listener`` and the pane's public ``log_y`` and ``x_mode``.
Tokens/s is the median of the logged windows of each part, so the app's watched part and its
busy half each have a headless counterpart.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from workbench.config.schema import load_config, save_config
from workbench.workspace import Workspace
from workbench.bench.measure import PhasePeak, run_measured
from workbench.bench.tasks import child_main, say

CONFIG = "bench-app"
KEYS = ("ctrl+y", "ctrl+n")  # log-y, next x axis: both redraw the loss chart
KEY_EVERY = 0.25  # seconds between key presses while training
KEY_TIMEOUT = 5.0  # a key not acted on and painted by then is left out
SIZES = {"120x40": (120, 40), "80x24": (80, 24)}  # the terminal sizes keys are timed at, in turn
KEYS_PER_SIZE = 4


def _halves(rows: list[dict], steps: int) -> tuple[float, float]:
    """Median tokens/s of the logged windows in the second quarter of the run (the first quarter
    is warm-up on both sides) and in its second half."""
    rows = [r for r in rows if r.get("tok_s")]
    half = steps // 2
    first = [r["tok_s"] for r in rows if steps // 4 < r["step"] <= half]
    second = [r["tok_s"] for r in rows if r["step"] > half]
    return _median(first), _median(second)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _headless(ws: Workspace, a: dict, rep: int) -> tuple[float, float, float]:
    """A real ``workbench train`` process on the same config: its two halves' tokens/s and its
    peak RSS. (In its own process, as a user runs it: torch's OpenMP pool belongs to one thread.)"""
    from workbench.runs.folder import get_run

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


class _KeyWatch:
    """Times one key press at a time, through the loss chart's listener: the first redraw after
    the press that finds the pane's (log_y, x_mode) changed is the action having run; the first
    paint after that is the chart repainted."""

    def __init__(self, pane):
        self.pane = pane
        self.t0: float | None = None
        self.acted: float | None = None
        self.painted: float | None = None
        self._before: tuple | None = None

    def _state(self) -> tuple:
        return self.pane.log_y, self.pane.x_mode

    def press(self, app, key: str) -> None:
        self._before, self.acted, self.painted = self._state(), None, None
        self.t0 = time.perf_counter()
        app.simulate_key(key)

    def on_chart(self, event: str, t: float) -> None:
        if self.t0 is None:
            return
        if event == "redraw" and self.acted is None and self._state() != self._before:
            self.acted = t
        elif event == "painted" and self.acted is not None and self.painted is None:
            self.painted = t


async def _in_app(ws: Workspace, a: dict) -> tuple[tuple[float, float], dict[str, dict[str, list[float]]]]:
    from workbench.tui.app import PANES, WorkbenchApp
    from workbench.machine.sysinfo import FixedProbe

    app = WorkbenchApp(ws, probe=FixedProbe(), theme="textual-dark")
    keys = {size: {"latency_ms": [], "painted_ms": []} for size in SIZES}
    sizes = list(SIZES)
    size = sizes[0]
    every = a.get("key_every", KEY_EVERY)
    per_size = a.get("keys_per_size", KEYS_PER_SIZE)  # keys at one size before the next
    async with app.run_test(size=SIZES[size]) as pilot:
        await pilot.press("3")
        pane = app.query_one("#train-pane")
        await _wait(pilot, lambda: pane.query_one("#train-tokenizer").value == a["tokenizer"], 30, "the tokenizer")
        await _wait(pilot, lambda: pane.query_one("#train-data").value, 30, "the data source")
        # as a user would: start once the app has settled (the other panes mount after the first paint)
        await _wait(pilot, lambda: all(app.query(f"#{key}-pane") for key, _ in PANES), 30, "every pane to mount")
        await pilot.pause(1.0)
        pane.query_one("#train-config").value = CONFIG
        pane.query_one("#train-data").value = a["text_dir"]
        watch = _KeyWatch(pane)
        pane.query_one("#chart-loss").add_listener(watch.on_chart)
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: pane.running or pane.state not in ("idle",), 60, "training to start")
        i = 0
        while pane.running:
            await asyncio.sleep(every)
            if not pane.history.train:  # measure while steps run, not during setup
                continue
            if i and i % per_size == 0 and size == sizes[(i // per_size - 1) % len(sizes)]:
                size = sizes[(i // per_size) % len(sizes)]  # the next block of keys at the next size
                await pilot.resize_terminal(*SIZES[size])
                continue  # the next key once the new layout has settled
            watch.press(app, KEYS[i % len(KEYS)])
            i += 1
            while watch.painted is None and time.perf_counter() - watch.t0 < KEY_TIMEOUT:
                await asyncio.sleep(0.001)
            if watch.painted is not None:
                keys[size]["latency_ms"].append((watch.acted - watch.t0) * 1000)
                keys[size]["painted_ms"].append((watch.painted - watch.t0) * 1000)
        if pane.state != "finished":
            raise RuntimeError(f"training in the app ended {pane.state!r}: {pane.query_one('#train-error').render()}")
        return _halves(pane.history.train, a["steps"]), keys


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
                           "keys": {size: {"latency_ms": [], "painted_ms": []} for size in SIZES},
                           "rss_mb": {"headless": None, "app": None}}
    for r in range(a["reps"]):
        first, second, rss = _headless(ws, a, r)
        out["tok_s"]["headless"].append(first)
        out["tok_s"]["headless_2nd_half"].append(second)
        out["rss_mb"]["headless"] = max(out["rss_mb"]["headless"] or 0.0, rss)
        with PhasePeak() as pp:
            (watched, busy), keys = asyncio.run(_in_app(ws, a))
        out["rss_mb"]["app"] = max(out["rss_mb"]["app"] or 0.0, pp.mb or 0.0) or None
        out["tok_s"]["app"].append(watched)
        out["tok_s"]["app_keys"].append(busy)
        for size, measured in keys.items():
            for k, xs in measured.items():
                out["keys"][size][k] += xs
        n = sum(len(m["latency_ms"]) for m in keys.values())
        say(f"app {r + 1}/{a['reps']}: headless {first:,.0f} tok/s, in the app {watched:,.0f} tok/s watched, "
            f"{busy:,.0f} tok/s with {n} keys (headless {second:,.0f})")
    out["versions"] = {m: getattr(sys.modules[m], "__version__", "?") for m in ("textual", "torch") if m in sys.modules}
    return out


if __name__ == "__main__":
    sys.exit(child_main({"app": task_app}, sys.argv[1:]))
