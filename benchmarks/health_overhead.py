"""What model-health records (``training.health``) cost a training run, on this machine.

    python benchmarks/health_overhead.py --workspace WS --tokenizer T4K --data DATA \
        [--presets debug,cpu-10min] [--steps 60] [--rounds 3]

Two measurements per preset, each with the real Trainer on real data:

1. Direct: a run measuring health at every step, the health work (``before_step`` and
   ``after_step``: gradient norms, the weight copy, the update ratios and the probe forward)
   timed apart from the step around it. Overhead at interval k = median health time /
   (k × median step time without it), so machine noise hits both sides of the ratio alike.
2. End to end: runs with ``train.health_interval`` = 50 and = 0 alternated ``--rounds`` times;
   the median tokens/s of each and their ratio (noisier: the effect is near the noise).

The model's vocabulary is the tokenizer's (``debug``'s 512 fitted to it, as training does). Prints a table; the figures
in benchmarks/HEALTH.md come from it.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _trainer(ws, preset: str, tokenizer: str, data: str, steps: int, interval: int, name: str):
    from workbench.config.schema import load_config
    from workbench.tokenizer.tokenizer import tokenizer_info
    from workbench.training.trainer import Trainer

    cfg = load_config(preset)
    cfg.train = cfg.train.replace(max_steps=steps, max_minutes=None, max_tokens=None, health_interval=interval,
                                  eval_interval=10**6, checkpoint_interval=10**6, log_interval=10)
    cfg.model = cfg.model.replace(vocab_size=int(tokenizer_info(ws, tokenizer).settings["vocab_size"]))  # debug's 512 fitted
    return Trainer.new(ws, cfg, tokenizer, data, name=name)


def direct(ws, preset, tokenizer, data, steps) -> dict:
    t = _trainer(ws, preset, tokenizer, data, steps, 1, f"health-bench-{preset}-direct")
    spent, marks = [], []

    def timed(fn):
        def inner(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[-1] += time.perf_counter() - t0
            return out
        return inner

    t.setup()
    t.health.before_step = timed(t.health.before_step)
    t.health.after_step = timed(t.health.after_step)
    spent.append(0.0)
    marks.append(time.perf_counter())

    def hook(tr):
        marks.append(time.perf_counter())
        spent.append(0.0)

    t.step_hooks.append(hook)
    t.run()
    warm = 5
    health = spent[warm:-1]
    step = [(b - a) - h for a, b, h in zip(marks[warm:-1], marks[warm + 1:], health)]
    return {"step_s": statistics.median(step), "health_s": statistics.median(health)}


def end_to_end(ws, preset, tokenizer, data, steps, rounds) -> dict:
    rates = {50: [], 0: []}
    for r in range(rounds):
        for interval in (50, 0):
            t = _trainer(ws, preset, tokenizer, data, steps, interval, f"health-bench-{preset}-{interval}-{r}")
            t.run()
            rows = [x["tok_s"] for x in t.run_folder.metrics() if x.get("kind") == "train"][1:]
            rates[interval].append(statistics.median(rows))
    return {k: statistics.median(v) for k, v in rates.items()}


def main() -> None:
    import shutil

    from workbench.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--presets", default="debug,cpu-10min")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--e2e-steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ws = Workspace.at(args.workspace)
    print(f"{'preset':10} {'step ms':>8} {'health ms':>9} {'@10':>7} {'@50':>7} {'@100':>7} "
          f"{'tok/s @50':>10} {'tok/s off':>10} {'ratio':>6}")
    try:
        for preset in args.presets.split(","):
            d = direct(ws, preset, args.tokenizer, args.data, args.steps)
            e = end_to_end(ws, preset, args.tokenizer, args.data, args.e2e_steps, args.rounds)
            pct = lambda k: f"{100 * d['health_s'] / (k * d['step_s']):.2f}%"  # noqa: E731
            print(f"{preset:10} {1e3 * d['step_s']:8.1f} {1e3 * d['health_s']:9.1f} {pct(10):>7} {pct(50):>7} "
                  f"{pct(100):>7} {e[50]:10,.0f} {e[0]:10,.0f} {e[50] / e[0]:6.3f}", flush=True)
    finally:
        for p in ws.root.joinpath("trained_models").glob("health-bench-*"):
            shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
