"""``workbench eval``: evaluate a run's checkpoint on its validation data or another source."""

from __future__ import annotations

import argparse

from workbench.cli.common import ProgressLine, print_json, say_note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="validation loss, perplexity, bits per byte and accuracy of a run")
    p.add_argument("run")
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help="evaluate on this instead of the run's validation split: all of a file, a folder's test "
                        "files (or --split valid), a hub dataset's validation split; recorded in the run")
    p.add_argument("--split", choices=("valid", "test"), default=None,
                   help="with a folder as --data: its test files (the default when it has some) or its validation files")
    p.add_argument("--text-column", default="text")
    p.add_argument("--checkpoint", default=None, help="checkpoint name (default: latest)")
    p.add_argument("--batches", type=int, default=None, help="number of batches (default: all validation windows)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="number format of the forward pass (default auto: the one the run trained in)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args, ws) -> int:
    from workbench.training.evaluate import EvalRequest, evaluate_run

    line = ProgressLine("eval")
    try:
        m = evaluate_run(ws, EvalRequest(args.run, args.checkpoint, args.data, args.text_column, args.batches,
                                         args.precision, args.split), say=say_note,
                         progress=lambda done, total: line.update(done, total, f"batch {done:,} of {total:,}"))
    finally:
        line.close()
    if args.json:
        print_json(m)
    else:
        part = f", {m['split']} split" if m.get("split") in ("valid", "test") else ""
        print(f"run {m['run']} @ {m['checkpoint']} on {m['data']}{part} ({m['val_tokens']:,} tokens, {m['precision']})")
        print(f"  loss {m['val_loss']:.4f}  ppl {m['val_ppl']:.2f}  bits/byte {m['bpb']:.4f}  "
              f"top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}")
    return 0
