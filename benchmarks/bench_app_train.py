"""Training inside the app vs headless (issue 7): key latency while training, and tokens/s.

  .venv/bin/python benchmarks/bench_app_train.py [--preset debug] [--steps 300] [--reps 2]
                                                 [--threads 0] [--json OUT]

Builds a tokenizer (vocab 512) on ``$WORKBENCH_TINYSTORIES`` (default ../shared/data/tinystories)
in a temporary workspace and prepares its token files once. Then, alternating ``--reps`` times:
- headless: ``Trainer.new(...).run()`` on the main thread, as ``workbench train`` does;
- in the app: ``WorkbenchApp.run_test`` (headless terminal, 140x44), the Train pane starts the
  same config with ctrl+r, and every 0.25 s a key is pressed (ctrl+y log-y, ctrl+n x axis,
  alternating), posted through the driver like a real key. Latency = from posting the key to
  its action running, and to the loss chart being drawn again with the change ("painted").
tokens/s = the median of the run's logged windows (its first window, warm-up, left out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.config import load_config, save_config  # noqa: E402
from workbench.workspace import Workspace  # noqa: E402

VOCAB = 512


def setup(root: Path, preset: str, steps: int, threads: int):
    from workbench.tokenizer import TokenizerSettings
    from workbench.tokenizer_build import build_tokenizer
    from workbench.tokens import ensure_prepared

    data = Path(os.environ.get("WORKBENCH_TINYSTORIES", REPO.parent / "shared" / "data" / "tinystories"))
    if not (data / "train.txt").is_file():
        sys.exit(f"no TinyStories sample at {data}; set WORKBENCH_TINYSTORIES")
    ws = Workspace.at(root)
    t = time.perf_counter()
    build_tokenizer(ws, "ts-512", TokenizerSettings(vocab_size=VOCAB, sample_mb=2, data=str(data)))
    ensure_prepared(ws, "ts-512", str(data), "text")
    print(f"tokenizer + data ready in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    cfg = load_config(preset, ws)
    cfg.model = cfg.model.replace(vocab_size=VOCAB)
    cfg.train = cfg.train.replace(max_steps=steps, eval_interval=10**6, checkpoint_interval=10**6,
                                  num_threads=threads)
    cfg.name = "bench"
    save_config(ws.models_dir(create=True) / "bench.yaml", cfg)
    return ws, str(data)


def tok_s(rows: list[dict]) -> float:
    vals = [r["tok_s"] for r in rows if r.get("tok_s")][1:]
    return statistics.median(vals) if vals else float("nan")


def headless(ws, data: str) -> float:
    from workbench.train import Trainer

    tr = Trainer.new(ws, load_config("bench", ws), "ts-512", data)
    summary = tr.run()
    assert summary["state"] == "finished", summary
    return tok_s([e.data for e in tr.buffer.drain() if e.kind == "log"])


async def in_app(ws, data: str) -> tuple[float, list[float], list[float]]:
    from textual import events

    from workbench.tui.app import WorkbenchApp
    from workbench.tui.sysinfo import FixedProbe

    app = WorkbenchApp(ws, probe=FixedProbe(), theme="textual-dark")
    lat, trip = [], []
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("3")
        pane = app.query_one("#train-pane")
        await pilot.pause(0.3)
        pane.query_one("#train-config").value = "bench"
        pane.query_one("#train-data").value = data
        ran: list[float] = []
        for name in ("action_toggle_log_y", "action_next_x_axis"):
            orig = getattr(pane, name)

            def hooked(orig=orig):
                ran.append(time.perf_counter())
                orig()

            setattr(pane, name, hooked)
        chart = pane.query_one("#chart-loss")
        painted: list[float] = []
        orig_render = chart.render

        def render():
            painted.append(time.perf_counter())
            return orig_render()

        chart.render = render
        await pilot.press("ctrl+r")
        while not pane.running:
            await pilot.pause(0.05)
        i = 0
        while pane.running:
            await asyncio.sleep(0.25)
            if not pane.history.train:  # measure while steps run, not during setup
                continue
            n, m = len(ran), len(painted)
            # the same path as a real key press: the driver posts a Key event to the app
            key = events.Key("ctrl+y" if i % 2 == 0 else "ctrl+n", None)
            key.set_sender(app)
            t0 = time.perf_counter()
            app._driver.send_message(key)
            i += 1
            while (len(ran) == n or len(painted) == m) and time.perf_counter() - t0 < 5:
                await asyncio.sleep(0.001)
            if len(ran) > n and len(painted) > m:
                lat.append((ran[-1] - t0) * 1000)
                trip.append((painted[-1] - t0) * 1000)
        assert pane.state == "finished", pane.state
        return tok_s(pane.history.train), lat, trip


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="train.num_threads on both sides (0 = torch default)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-app-train-") as tmp:
        ws, data = setup(Path(tmp), args.preset, args.steps, args.threads)
        heads, apps, lat, trip = [], [], [], []
        for rep in range(args.reps):
            heads.append(headless(ws, data))
            a, la, tr = asyncio.run(in_app(ws, data))
            apps.append(a)
            lat += la
            trip += tr
            print(f"rep {rep + 1}: headless {heads[-1]:,.0f} tok/s, app {a:,.0f} tok/s, {len(la)} keys",
                  file=sys.stderr)
    out = {
        "preset": args.preset, "steps": args.steps, "threads": args.threads, "reps": args.reps,
        "headless_tok_s": statistics.median(heads), "app_tok_s": statistics.median(apps),
        "ratio": statistics.median(apps) / statistics.median(heads),
        "per_rep": [{"headless": h, "app": a} for h, a in zip(heads, apps)],
        "keys": len(lat), "latency_ms_p50": pct(lat, 50), "latency_ms_p95": pct(lat, 95),
        "painted_ms_p50": pct(trip, 50), "painted_ms_p95": pct(trip, 95),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
