"""``workbench config list | show | new``: the Config pane without the app (``workbench.config.report``)."""

from __future__ import annotations

import argparse

from workbench.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="list, inspect and save model + training configs",
                       description="What the Config pane shows, headless: a config's fields, its estimates "
                                   "(parameters, FLOPs, training memory) and whether it fits this machine, and "
                                   "what changed from the preset it was loaded from.")
    cmds = p.add_subparsers(dest="config_command", metavar="VERB")

    ls = cmds.add_parser("list", help="the presets and the workspace's models/*.yaml")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    show = cmds.add_parser("show", help="a config's fields, estimates, verdict for this machine and changes")
    show.add_argument("spec", metavar="PRESET|PATH", help="a name from `workbench config list` or a YAML file")
    _request_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    new = cmds.add_parser("new", help="save a config (a preset with changes) as models/NAME.yaml")
    new.add_argument("name", metavar="NAME")
    new.add_argument("--from", dest="spec", required=True, metavar="PRESET|PATH", help="the config to start from")
    _request_args(new)
    new.add_argument("--force", action="store_true", help="replace an existing models/NAME.yaml")
    new.add_argument("--json", action="store_true")
    new.set_defaults(func=cmd_new)


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="change a field, e.g. --set model.dim=128 (repeatable)")
    p.add_argument("--tokenizer", metavar="NAME", help="take model.vocab_size from this tokenizer")
    p.add_argument("--minutes", type=float, metavar="M",
                   help="a time budget: train.max_minutes = M, with no step or token budget")


def _request(args):
    from workbench.config.report import ConfigRequest

    return ConfigRequest(args.spec, tuple(args.set), args.tokenizer, args.minutes)


def cmd_list(args, ws) -> int:
    from workbench.config.report import list_configs, si

    entries = list_configs(ws)
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    width = max((len(e.name) for e in entries), default=4)
    print(f"{'name':<{width}}  {'source':<7}  {'params':>8}  description")
    for e in entries:
        params = si(e.params) if e.params is not None else "—"
        about = f"error: {e.error}" if e.error else _clip(e.description or "", DESCRIPTION_WIDTH)
        print(f"{e.name:<{width}}  {e.source:<7}  {params:>8}  {about}")
    return 0


DESCRIPTION_WIDTH = 72  # the whole description is in --json and `config show`


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def cmd_show(args, ws) -> int:
    from workbench.config.report import config_report, render, report_lines

    rep = config_report(ws, _request(args))
    if args.json:
        print_json(rep.to_dict())
    else:
        print(render(report_lines(rep)))
    return 0


def cmd_new(args, ws) -> int:
    from workbench.config.report import NewConfigRequest, diff_lines, new_config, render

    path, r = new_config(ws, NewConfigRequest(args.name, _request(args), args.force))
    if args.json:
        print_json({"name": args.name, "path": str(path), "base": r.base_label, "notices": r.notices,
                    "diff": [{"field": k, "old": old, "new": new} for k, old, new in r.diff],
                    "config": r.config.to_dict()})
        return 0
    print(f"saved models/{path.name}: {path}")
    for n in r.notices:
        print(f"notice: {n}")
    print(render(diff_lines(r.diff, r.base_label)))
    return 0
