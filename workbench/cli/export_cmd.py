"""``workbench export``: write a run's checkpoint as a transformers Llama folder or as plain weights."""

from __future__ import annotations

import argparse

from .common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's checkpoint (hf: transformers Llama folder; weights: safetensors + config)")
    p.add_argument("run")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--format", choices=("hf", "weights"), default="hf")
    p.add_argument("--checkpoint", default=None, help="checkpoint name (default: latest)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)


def cmd_export(args, ws) -> int:
    from ..export import export_run

    out = export_run(ws, args.run, args.to, args.format, args.checkpoint, overwrite=args.force)
    if args.json:
        print_json(out)
    else:
        print(f"exported {out['run']} @ {out['checkpoint']} as {out['format']} to {out['path']}: "
              f"{', '.join(out['files'])}")
    return 0
