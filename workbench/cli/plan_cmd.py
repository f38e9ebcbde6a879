"""``workbench plan``: the recipe a time budget buys on this machine (``workbench.planning.planner``)."""

from __future__ import annotations

import argparse
import sys

from workbench.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="the model shape and recipe a time budget buys on this machine",
                       description="Measure this machine's training speed for the candidate shapes (once; cached), "
                                   "apply the rule fitted to measured runs, and print the config the budget "
                                   "should train, with its reasons. `workbench train --tokenizer T --minutes M` "
                                   "trains it.")
    p.add_argument("--tokenizer", required=True, metavar="NAME")
    p.add_argument("--minutes", required=True, type=float, metavar="M")
    p.add_argument("--threads", type=int, default=None, help="torch threads training will use (default: all cores)")
    p.add_argument("--save", metavar="NAME", help="also save the config as models/NAME.yaml")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the candidates' speeds again (a cached figure taken on a busy machine is stale)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)


def print_plan(pl, stream=None) -> None:
    stream = stream or sys.stderr  # looked up now: the stream in use, not the one at import
    print("plan: " + pl.reasons[0], file=stream)
    for r in pl.reasons[1:]:
        print(f"  {r}", file=stream)
    if pl.vocab_advice:
        print(f"  note: {pl.vocab_advice}", file=stream)


def cmd_plan(args, ws) -> int:
    from workbench.config.schema import save_config
    from workbench.planning.planner import PlanRequest, plan

    if args.remeasure:
        from workbench.machine.probe import forget

        print(f"dropped {len(forget(['speed']))} cached speed(s); measuring again", file=sys.stderr)
    pl = plan(ws, PlanRequest(args.tokenizer, args.minutes, args.threads),
              say=lambda m: print(m, file=sys.stderr, flush=True))
    if args.save:
        from workbench.workspace import check_name

        path = ws.models_dir(create=True) / f"{check_name('config', args.save)}.yaml"
        save_config(path, pl.config)
        print(f"saved {path}", file=sys.stderr)
    if args.json:
        print_json(pl.to_dict())
        return 0
    print_plan(pl, sys.stdout)
    print(f"{'dim':>4} {'L':>2} {'params':>8} {'tok/s':>8} {'tokens':>11} {'tok/param':>9} {'pred bpb':>8}")
    for r in sorted(pl.candidates, key=lambda r: r["predicted_bpb"]):
        print(f"{r['dim']:>4} {r['n_layers']:>2} {r['params'] / 1e6:>7.2f}M {r['tok_s']:>8,.0f} {r['tokens']:>11,} "
              f"{r['tokens_per_param']:>9g} {r['predicted_bpb']:>8.3f}")
    return 0
