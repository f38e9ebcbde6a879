"""``workbench train``: train a model (or resume a run) with one live progress line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys

from workbench.data.sources import DEFAULT_HUB_ID
from workbench.cli.common import ProgressLine, fmt_seconds, print_json
from workbench.errors import Terminated


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model, or resume a run")
    p.add_argument("--config", metavar="PATH|PRESET", help="a YAML config or preset name (models/ first, then shipped presets)")
    p.add_argument("--tokenizer", metavar="NAME", help="a tokenizer under tokenizers/")
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help=f"hub dataset id or local .txt/.jsonl/.json/.parquet file or folder (default {DEFAULT_HUB_ID})")
    p.add_argument("--text-column", default="text")
    p.add_argument("--name", metavar="RUN", help="run folder name under trained_models/ (default PRESET-DATE-TIME)")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="override a config field, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its latest checkpoint (only train.* may be --set)")
    p.add_argument("--init-from", metavar="RUN[:CHECKPOINT]",
                   help="a new run starting from that run's weights (its config unless --config; its tokenizer), "
                        "with a new optimizer and schedule: fine-tune it on --data")
    p.add_argument("--minutes", type=float, metavar="M",
                   help="a wall-clock budget; without --config, the planner picks the recipe M minutes buy on "
                        "this machine (see `workbench plan`)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=cmd_train)


def cmd_train(args, ws) -> int:
    from workbench.cli import TERMINATING
    from workbench.config.overrides import parse_overrides
    from workbench.training.distributed import dist_info
    from workbench.training.trainer import init_distributed, start_training
    from workbench.training.events import (CheckpointSaved, Evaluated, Failed, Logged, Notice, Paused, Resumed,
                                           Started, Stepped)
    from workbench.training.notices import notices, start_lines
    from workbench.training.request import TrainRequest, resolve

    init_distributed()
    rank = dist_info()[0]
    line = ProgressLine("train")
    state = {"loss": None, "tok_s": None, "val": None}

    def on_event(ev):
        match ev:
            case Logged(row=row):
                state["loss"], state["tok_s"] = row["loss"], row["tok_s"]
            case Evaluated(row=row):
                state["val"] = row["val_loss"]
            case Notice() | Paused() | Resumed():
                line.close()
                print("\n".join(notices(ev)), file=sys.stderr)
            case Failed(message=message) if trainer is not None and trainer.world > 1:
                # said now, by the rank it happened on: it may then wait on the others
                print(f"error (rank {trainer.rank}): {message}", file=sys.stderr, flush=True)
            case Started() if trainer.rank == 0:
                line.close()
                print("\n".join(start_lines(dataclasses.asdict(ev))), file=sys.stderr)  # as the Train pane's notices say it
        if isinstance(ev, (Stepped, Logged, Evaluated, CheckpointSaved)):
            frac = trainer.progress() if trainer is not None else 0
            parts = [f"step {ev.step}"]
            if state["loss"] is not None:
                parts.append(f"loss {state['loss']:.4f}")
            if state["val"] is not None:
                parts.append(f"val {state['val']:.4f}")
            if state["tok_s"]:
                parts.append(f"{state['tok_s']:,.0f} tok/s")
            line.update(frac, 1.0, "  ".join(parts), force=not isinstance(ev, Stepped))

    trainer = None
    req = TrainRequest(tokenizer=args.tokenizer, data=args.data, config=args.config,
                       overrides=parse_overrides(args.set), minutes=args.minutes, name=args.name,
                       text_column=args.text_column, resume=args.resume, init_from=args.init_from)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if rank == 0 else (lambda m: None)
    res = resolve(ws, req, say=say)
    if res.plan is not None and rank == 0:
        from workbench.cli.plan_cmd import print_plan

        print_plan(res.plan)
    for notice in res.notices:
        say(notice)
    prep = ProgressLine("prepare data")
    try:
        trainer = start_training(ws, req, res, on_event=on_event,
                                 prepare_progress=lambda split, done, total, msg: prep.update(done, total, f"{split}: {msg}"))
    finally:
        prep.close()
    if trainer.rank == 0:
        print(f"run {trainer.run_folder.name}: {trainer.run_folder.path}", file=sys.stderr)

    # Ctrl+C, SIGTERM or SIGHUP (kill, a closed terminal, a scheduler) stops between steps and
    # keeps a checkpoint; a second one aborts at once (the last checkpoint stays loadable).
    def on_signal(signum, frame):
        if trainer.stopping:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)
        line.close()
        what = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"{what}: stopping after this step, with a checkpoint ({what} again to abort)...", file=sys.stderr)
        trainer.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, *TERMINATING)}
    try:
        summary = trainer.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        line.close()
    if trainer.rank == 0:
        code = _report(summary, args.json, said=trainer.world > 1)
    else:  # the other ranks said what went wrong on them as it happened
        code = 1 if summary["state"] == "failed" else 0
    if trainer.world > 1:
        # A torchrun worker leaves without the interpreter's teardown: tearing down gloo's
        # process group and threads at exit aborted a rank whose run had finished (SIGABRT,
        # "terminate called without an active exception"), which failed the whole launch.
        # Everything is written and both ranks passed the trainer's last barrier.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _report(summary: dict, as_json: bool, said: bool = False) -> int:
    """Rank 0's last words about a run; the exit status. ``said``: a failure was already said
    (under torchrun each rank says its own as it happens)."""
    if as_json:
        print_json(summary)
    elif summary["state"] == "failed":
        if not said:
            print(f"error: {summary['message']}", file=sys.stderr)
    else:
        best = summary.get("best_val_loss")
        print(f"{summary['state']}: run {summary['run']}, step {summary['step']}, {summary['tokens']:,} tokens, "
              f"{fmt_seconds(summary['elapsed'])}" + (f", best val loss {best:.4f}" if best is not None else "")
              + f", checkpoint {summary['checkpoint']}")
    return 1 if summary["state"] == "failed" else 0
