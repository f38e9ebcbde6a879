"""``workbench experiment list|new|check``: your own variants of the model's parts."""

from __future__ import annotations

import argparse
import sys

from workbench.cli.common import add_command, print_json
from workbench.experiments.registry import PARTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="your own variants of the model's parts (files in experiments/)",
                       description="An experiment is a Python file in the workspace's experiments/ folder that "
                                   "registers a variant of a part of the model; a config then names it "
                                   "(--set model.PART=NAME).")
    s = p.add_subparsers(dest="experiment_command", metavar="SUBCOMMAND")
    add_command(s, "list", "every registered variant, built in or from a file", cmd_list)
    new = s.add_parser("new", help="write experiments/NAME.py: a copy of a built-in part, ready to edit")
    new.add_argument("name")
    new.add_argument("--from", dest="part", required=True, choices=list(PARTS), help="the part to copy")
    new.add_argument("--variant", default=None, help="the built-in variant to copy (default: the default one)")
    new.set_defaults(func=cmd_new)
    add_command(s, "check", "build the debug shape with a variant, forward, backward and a trace", cmd_check, "name")


def cmd_list(args, ws) -> int:
    from workbench.experiments.verbs import list_variants

    rows = list_variants()
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        where = "built in" if r["builtin"] else r["file"]
        print(f"{r['field']:<16} {r['name']:<12} {where}" + (f"  — {r['description']}" if r["description"] else ""))
        section = r["field"].split(".", 1)[0]
        for key, o in r["options"].items():  # its own fields: --set SECTION.KEY=VALUE
            print(f"{'':<16} {'':<12} {section}.{key} = {o['default']!r} ({o['allowed']}): {o['help']}")
    return 0


def cmd_new(args, ws) -> int:
    from workbench.experiments.verbs import new_experiment

    path = new_experiment(ws.root, args.name, args.part, args.variant)
    print(f"wrote {path}: edit it, then `workbench experiment check {args.name}`")
    return 0


def cmd_check(args, ws) -> int:
    from workbench.experiments.verbs import check_experiment

    result = check_experiment(args.name)
    if args.json:
        print_json({"ok": result.ok, "line": result.line})
    else:
        print(result.line, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
