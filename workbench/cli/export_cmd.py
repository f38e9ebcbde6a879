"""``workbench export``: write a run's checkpoint for transformers (hf), llama.cpp (gguf),
llama2.c's run.c (llama2c) or as plain weights."""

from __future__ import annotations

import argparse

from workbench.cli.common import print_json, say_note

FORMAT_HELP = ("hf: transformers Llama folder; gguf: llama.cpp model.gguf; llama2c: run.c "
               "model.bin + tokenizer.bin; weights: safetensors + config.yaml (any config)")


def register(sub: argparse._SubParsersAction) -> None:
    from workbench.export import FORMATS

    p = sub.add_parser("export", help="export a run's checkpoint for transformers, llama.cpp, "
                                      "llama2.c's run.c, or as plain weights")
    p.add_argument("run")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to create (or an earlier export to replace with --force)")
    p.add_argument("--format", choices=FORMATS, default="hf", help=FORMAT_HELP)
    p.add_argument("--dtype", default=None, metavar="T", help="gguf only: f32 (default), f16 or q8_0")
    p.add_argument("--version", type=int, default=None, metavar="V",
                   help="llama2c only: 0 (default, the legacy file run.c reads) or 1 (ak42 header)")
    p.add_argument("--checkpoint", default=None, help="checkpoint name (default: latest)")
    p.add_argument("--force", action="store_true",
                   help="replace DIR if it is an earlier export (a folder that is not is never replaced)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)


def cmd_export(args, ws) -> int:
    from workbench.export import export_run

    out = export_run(ws, args.run, args.to, args.format, args.checkpoint, overwrite=args.force,
                     dtype=args.dtype, version=args.version, say=say_note)
    if args.json:
        print_json(out)
    else:
        opts = "".join(f", {k} {v}" for k, v in out["options"].items())
        print(f"exported {out['run']} @ {out['checkpoint']} as {out['format']}{opts} to "
              f"{out['path']}: {', '.join(out['files'])}")
    return 0
