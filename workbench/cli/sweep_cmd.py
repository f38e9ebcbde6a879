"""``workbench sweep``: train a grid or list of configs for a budget each and rank them by
validation bits per byte (``workbench.planning.sweep.run_sweep``)."""

from __future__ import annotations

import argparse
import sys

from workbench.data.sources import DEFAULT_HUB_ID
from workbench.errors import WorkbenchError
from workbench.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train a grid or list of configs, each for a budget, ranked by bits per byte",
                       description="Train every combination of --grid values (or every run of a --spec file) "
                                   "from one base config, one after another or --parallel at once (the cores are "
                                   "split between them), skipping configs whose memory estimate does not fit; "
                                   "then rank them by validation bits per byte.")
    p.add_argument("--config", required=False, default=None, metavar="PATH|PRESET", help="the base config")
    p.add_argument("--tokenizer", metavar="NAME")
    p.add_argument("--data", metavar="SOURCE", default=DEFAULT_HUB_ID)
    p.add_argument("--text-column", default="text")
    p.add_argument("--name", metavar="SWEEP", help="runs are named SWEEP-1, SWEEP-2, ...")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--minutes", type=float, help="wall-clock budget of each run")
    b.add_argument("--tokens", type=float, help="token budget of each run")
    b.add_argument("--steps", type=int, help="step budget of each run")
    p.add_argument("--grid", metavar="SECTION.FIELD=V1,V2,...", action="append", default=[],
                   help="values to sweep for one field (repeatable: every combination runs)")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="an override for every run (repeatable)")
    p.add_argument("--spec", metavar="YAML", help="a sweep file: base, tokenizer, data, name, budget, set, grid or runs")
    p.add_argument("--parallel", type=int, default=1, help="runs training at once (default 1)")
    p.add_argument("--full-eval", action="store_true", help="rank on a full pass over the validation split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)


def build_request(args):
    from workbench.planning.sweep import SweepRequest, parse_pairs

    spec: dict = {}
    if args.spec:
        import yaml

        try:
            with open(args.spec, encoding="utf-8") as f:
                spec = yaml.safe_load(f) or {}
        except OSError as e:
            raise WorkbenchError(f"cannot read sweep file {args.spec!r}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise WorkbenchError(f"{args.spec} is not valid YAML: {str(e).splitlines()[0]}") from None
        known = {"base", "tokenizer", "data", "name", "budget", "set", "grid", "runs", "parallel", "full_eval"}
        if not isinstance(spec, dict) or set(spec) - known:
            bad = sorted(set(spec) - known) if isinstance(spec, dict) else ["(not a mapping)"]
            raise WorkbenchError(f"{args.spec}: unknown key(s) {', '.join(bad)}; valid keys: {', '.join(sorted(known))}")
    budget = spec.get("budget") or {}
    for kind in ("minutes", "tokens", "steps"):
        if getattr(args, kind) is not None:
            budget = {kind: getattr(args, kind)}
    if not isinstance(budget, dict) or len(budget) != 1:
        raise WorkbenchError("give one budget: --minutes M, --tokens N or --steps S (or budget: {minutes: M} in --spec)")
    (kind, amount), = budget.items()
    base = args.config or spec.get("base")
    tok = args.tokenizer or spec.get("tokenizer")
    name = args.name or spec.get("name")
    if not base or not tok or not name:
        raise WorkbenchError("sweep needs --config (the base), --tokenizer and --name (or base, tokenizer, name in --spec)")
    return SweepRequest(base=base, tokenizer=tok, data=spec.get("data") or args.data, name=name, budget=kind,
                        amount=float(amount), sets={**(spec.get("set") or {}), **parse_pairs(args.set, "--set", False)},
                        grid={**(spec.get("grid") or {}), **parse_pairs(args.grid, "--grid", True)},
                        runs=list(spec.get("runs") or []), parallel=args.parallel if args.parallel != 1 else
                        int(spec.get("parallel") or 1), full_eval=args.full_eval or bool(spec.get("full_eval")),
                        text_column=args.text_column)


def cmd_sweep(args, ws) -> int:
    from workbench.planning.sweep import best_line, run_sweep

    req = build_request(args)
    res = run_sweep(ws, req, say=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print_json({"sweep": res.name, "rows": res.rows})
        return 0
    print(f"{'run':24} {'dim':>4} {'L':>2} {'params':>8} {'tokens':>11} {'bits/byte':>9} status")
    for r in res.rows:
        c = r.get("config") or {}
        print(f"{r['name']:24} {c.get('dim', '-'):>4} {c.get('n_layers', '-'):>2} "
              f"{(r.get('params') or 0) / 1e6:>7.2f}M {r.get('tokens') or 0:>11,} "
              f"{r['bpb']:>9.4f} {r['status']}" if r.get("bpb") else
              f"{r['name']:24} {c.get('dim', '-'):>4} {c.get('n_layers', '-'):>2} {'':>8} {'':>11} {'':>9} "
              f"{r['status']}{': ' + r['message'] if r.get('message') else ''}")
    print(best_line(res))
    return 0 if all(r["status"] in ("finished", "skipped") for r in res.rows) else 1
