"""``workbench trace``: print the shape trace of one forward pass as a tree (or write JSON).

The model comes from a config (``--config PATH|PRESET``, freshly initialised) or from a run
(``--run RUN``, its latest checkpoint or ``--checkpoint NAME``). Input tokens come from ``--text`` encoded with a real
tokenizer (the run's own, or ``--tokenizer NAME`` from the workspace) or, without text,
``--tokens N`` random ids. There is no byte-level stand-in for a tokenizer: text is only ever
encoded the way the model would see it. The Trace pane makes the same ``TraceRequest`` and
calls the same ``workbench.tracing.run.run_trace``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli.common import say_note
from workbench.errors import WorkbenchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="trace one forward pass: every call's shapes, stats and FLOPs",
                       description=__doc__.split("\n\n")[0].replace("``", "`"))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="PATH|PRESET", help="a config YAML or preset name "
                     "(workspace models/ first, then the packaged presets); weights are random")
    src.add_argument("--run", metavar="RUN", help="a run in trained_models/; uses its latest checkpoint")
    p.add_argument("--checkpoint", metavar="NAME",
                   help="with --run: this checkpoint (step_000200) instead of the latest; init = random weights")
    p.add_argument("--text", metavar="T", help="text to encode as the input (needs a tokenizer)")
    p.add_argument("--tokenizer", metavar="NAME",
                   help="workspace tokenizer (tokenizers/NAME/tokenizer.model) for --text with --config")
    p.add_argument("--tokens", type=int, default=8, metavar="N",
                   help="without --text: trace N random token ids (default 8)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="batch size (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for init and random ids (default 0)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="show calls at most N levels below the model (default: all)")
    p.add_argument("--json", metavar="PATH", help="also write the whole trace as JSON to PATH")
    p.add_argument("--set", metavar="model.FIELD=VALUE", action="append", default=[],
                   help="with --config: change a model field before tracing, e.g. --set model.n_layers=2 (repeatable)")
    p.add_argument("--meta", action="store_true",
                   help="trace on the meta device: shapes and FLOPs only, no memory for weights")
    p.set_defaults(func=run)


def run(args, ws) -> int:
    from workbench.fileio import write_json
    from workbench.tracing.run import run_trace
    from workbench.tracing.files import trace_text
    from workbench.tracing.request import INIT, TraceRequest

    if args.depth is not None and args.depth < 0:
        raise WorkbenchError(f"--depth = {args.depth} is not allowed: 0 or more")
    if args.checkpoint and not args.run:
        raise WorkbenchError("--checkpoint needs --run: a config starts from random weights")
    req = TraceRequest(config=args.config, run=args.run,
                       checkpoint=INIT if args.checkpoint == "init" else args.checkpoint,
                       text=args.text, tokenizer=args.tokenizer, tokens=args.tokens, batch=args.batch,
                       seed=args.seed, meta=args.meta, sets=tuple(args.set))
    result, _ = run_trace(ws, req, say=say_note)
    print(trace_text(result, depth=args.depth))  # what the Trace pane saves as NAME.txt
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0
