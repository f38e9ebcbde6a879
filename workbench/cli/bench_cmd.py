"""``workbench bench``: the benchmark suite, side by side with the peers, in one run."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    from workbench.bench import ALL_TASKS, PRESETS, TASK_NAMES

    p = sub.add_parser(
        "bench", help="measure tokenizer, data, training, the app and decoding beside the peers",
        description="Measure, in one run, tokenizer build and encode and bytes per token across vocab sizes "
        "(beside HF tokenizers), data prepare and its peak RSS on a larger input, training tokens/s and MFU "
        "(beside transformers, nanoGPT's and llama2.c's model.py and the machine's matmul peak), the memory "
        "estimate beside a measured peak, fp32-vs-auto loss parity, training in the app against headless with "
        "key latency, and decoding (beside transformers generate), with each task's peak RSS. Writes JSON and "
        "a markdown table and prints the table. Peers come from the `bench` extra; a missing one is reported "
        "as missing.")
    p.add_argument("--quick", action="store_true", help="fewer steps and less text: about 5 minutes on 2 cores")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the results here (default: bench/<date-time>.json in the workspace)")
    p.add_argument("--markdown", metavar="PATH", default=None,
                   help="write the table here (default: next to the JSON, with .md)")
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help="data source (default: $WORKBENCH_TINYSTORIES when it holds train.txt, else the hub's "
                        "roneneldan/TinyStories); a bounded slice of it is used, see --text-mb")
    p.add_argument("--text-mb", type=float, default=None,
                   help="MB of training text taken from the source (default 4 with --quick, else 48)")
    p.add_argument("--tasks", type=_csv, default=list(TASK_NAMES),
                   help=f"comma-separated subset of: {','.join(ALL_TASKS)} (default: all but anchor, which "
                        "trains for minutes: the planner's recipe beside a plain nanoGPT run)")
    p.add_argument("--anchor-minutes", type=lambda t: [float(x) for x in _csv(t)], default=[10.0],
                   metavar="M[,M...]", help="budgets of the anchor task (default 10)")
    p.add_argument("--anchor-seeds", type=int, default=1, help="seeds per anchor budget (default 1)")
    p.add_argument("--presets", type=_csv, default=list(PRESETS),
                   help=f"model presets for training and decoding (default: {','.join(PRESETS)})")
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure, at least 3 (default 3)")
    p.add_argument("--vocab", type=int, default=4096, help="tokenizer vocab for every task (default 4096)")
    p.add_argument("--keep", metavar="DIR", default=None,
                   help="keep the benchmark's workspace (tokenizer, token files) in DIR instead of deleting it")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a peer is missing")
    p.set_defaults(func=cmd_bench)


def recorded_command(args) -> str:
    """The command line that reproduces this run (as the report records it)."""
    from workbench.bench import PRESETS, TASK_NAMES

    parts = ["workbench", "bench"] + (["--quick"] if args.quick else [])
    for flag, value, default in (("--data", args.data, None), ("--text-mb", args.text_mb, None),
                                 ("--tasks", ",".join(args.tasks), ",".join(TASK_NAMES)),
                                 ("--presets", ",".join(args.presets), ",".join(PRESETS)),
                                 ("--reps", args.reps, 3), ("--vocab", args.vocab, 4096),
                                 ("--anchor-minutes", ",".join(f"{m:g}" for m in args.anchor_minutes), "10"),
                                 ("--anchor-seeds", args.anchor_seeds, 1),
                                 ("--json", args.json, None), ("--markdown", args.markdown, None)):
        if value != default:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def cmd_bench(args, ws) -> int:
    from workbench import fileio
    from workbench.bench import BenchOptions, build_rows, render_markdown, run_bench

    opts = BenchOptions(data=args.data, quick=args.quick, tasks=args.tasks, presets=args.presets, reps=args.reps,
                        text_mb=args.text_mb, vocab=args.vocab, keep=args.keep, anchor_minutes=args.anchor_minutes,
                        anchor_seeds=args.anchor_seeds).validate()
    json_path = Path(args.json) if args.json else ws.root / "bench" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    md_path = Path(args.markdown) if args.markdown else json_path.with_suffix(".md")
    for p in (json_path, md_path):
        if p.exists() and p.is_dir():
            from workbench.errors import WorkbenchError

            raise WorkbenchError(f"{str(p)!r} is a folder; --json and --markdown take file paths")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    res = run_bench(opts, say=say)
    rows = build_rows(res)
    command = recorded_command(args)
    res["command"] = command
    res["rows"] = rows
    md = render_markdown(res, rows, command)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json(json_path, res)
    fileio.write_text(md_path, md)
    print(md)
    say(f"wrote {json_path} and {md_path} ({res['seconds']:.0f} s)")
    failed = [r for r in rows if r["status"] == "failed"]
    missing = [r for r in rows if r["status"] == "missing"]
    if missing:
        say(f"warning: {len(missing)} figure(s) have no peer to compare with: "
            + "; ".join(sorted({r["message"] for r in missing})))
    if failed:
        say(f"error: {len(failed)} task(s) failed: " + "; ".join(f"{r['task']}: {r['message']}" for r in failed))
        return 1
    return 1 if (missing and args.strict) else 0
