"""``workbench import``: a transformers Llama folder (or hub id), a llama.cpp GGUF file or a
llama2.c model.bin becomes a run of this workspace, like one trained here."""

from __future__ import annotations

import argparse

from workbench.cli.common import print_json, say_note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="make a run from a transformers Llama folder or hub id, a GGUF file (llama), "
                                      "or a llama2.c model.bin")
    p.add_argument("source", help="a transformers Llama folder (or its hub id), a .gguf file, or a llama2.c model.bin")
    p.add_argument("--name", required=True, help="the new run's name")
    p.add_argument("--tokenizer", default=None, metavar="FILE",
                   help="llama2.c only: the sentencepiece tokenizer.model the model.bin was trained with")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)


def cmd_import(args, ws) -> int:
    from workbench.export.importer import import_model

    out = import_model(ws, args.source, args.name, args.tokenizer, say=say_note)
    if args.json:
        print_json(out)
        return 0
    m = out["config"]
    opts = "".join(f", {k} {v if not isinstance(v, list) else '+'.join(v)}" for k, v in out["options"].items())
    tied = "tied" if m["tie_embeddings"] else "untied"
    print(f"imported {out['source']} ({out['format']}{opts}) as run {out['run']} @ {out['checkpoint']}: "
          f"{out['params']:,} parameters, dim {m['dim']}, {m['n_layers']} layers, {m['n_heads']}/{m['n_kv_heads']} "
          f"heads, vocab {m['vocab_size']}, {tied} head; tokenizer "
          f"{out['tokenizer']}{' (new)' if out['tokenizer_new'] else ' (already here)'}")
    return 0
