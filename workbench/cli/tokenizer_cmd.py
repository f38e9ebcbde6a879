"""``workbench tokenizer``: build, list, show and try character-pair BPE tokenizers."""

from __future__ import annotations

import argparse

from workbench.data.sources import DEFAULT_HUB_ID
from workbench.tokenizer.tokenizer import (TokenizerSettings, list_tokenizers, load_tokenizer, tokenizer_info)
from workbench.cli.common import ProgressLine, add_command, listed, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="build and inspect tokenizers")
    s = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND")

    b = s.add_parser("build", help="build a character-pair BPE tokenizer with sentencepiece")
    b.add_argument("--data", default=DEFAULT_HUB_ID, metavar="SOURCE",
                   help=f"hub dataset id or local .txt/.jsonl/.json/.parquet file or folder (default {DEFAULT_HUB_ID})")
    b.add_argument("--text-column", default="text", help="column holding the text in jsonl/json/parquet/hub data")
    b.add_argument("--vocab-size", type=int, default=TokenizerSettings.vocab_size, metavar="N",
                   help="number of pieces, specials and byte pieces included (default %(default)s)")
    b.add_argument("--name", required=True, help="folder name under tokenizers/")
    b.add_argument("--no-byte-fallback", action="store_true",
                   help="no byte pieces: allows a character-level vocab, but unseen characters become <unk>")
    b.add_argument("--sample-mb", type=float, default=TokenizerSettings.sample_mb, metavar="M",
                   help="read at most this many MB of training text (default %(default)s)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing tokenizer of that name")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.set_defaults(func=cmd_build)

    add_command(s, "list", "list built tokenizers", cmd_list)
    add_command(s, "show", "settings and stats of one tokenizer", cmd_show, "name")

    en = s.add_parser("encode", help="ids and pieces of a text")
    en.add_argument("name")
    en.add_argument("text")
    en.add_argument("--json", action="store_true")
    en.set_defaults(func=cmd_encode)

    de = s.add_parser("decode", help="the text of token ids (what `encode` and `generate --json` print)")
    de.add_argument("name")
    de.add_argument("ids", nargs="+", metavar="ID", help="token ids, space- or comma-separated")
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=cmd_decode)


def cmd_build(args, ws) -> int:
    from workbench.tokenizer.build import build_request, build_tokenizer

    name, settings = build_request(args.data, args.vocab_size, args.sample_mb, not args.no_byte_fallback,
                                   args.name, args.text_column)  # as the Tokenizer pane's form asks
    line = ProgressLine(f"tokenizer {name}")

    def on_event(ev):
        if ev.kind == "progress":
            line.update(ev.done, ev.total, f"{ev.phase}: {ev.message}")

    try:
        info = build_tokenizer(ws, name, settings, overwrite=args.overwrite, on_event=on_event)
    finally:
        line.close()
    if args.json:
        print_json(info.to_dict())
    else:
        st = info.stats
        print(f"built tokenizer {info.name} at {info.path}")
        print(f"  vocab {st['vocab_size']}, alphabet {st['alphabet_size']} characters, "
              f"{st.get('bytes_per_token')} bytes/token on held-out text, {st['build_seconds']:.1f} s")
    return 0


def cmd_list(args, ws) -> int:
    infos = list_tokenizers(ws)
    if listed(infos, args.json, "no tokenizers yet; build one with `workbench tokenizer build --data SOURCE --name NAME`"):
        return 0
    print(f"{'name':24} {'vocab':>6} {'alphabet':>8} {'bytes/tok':>9} {'build s':>8}  data")
    for i in infos:
        st = i.stats
        print(f"{i.name:24} {st.get('vocab_size', '?'):>6} {st.get('alphabet_size', '?'):>8} "
              f"{st.get('bytes_per_token') or '-':>9} {st.get('build_seconds', '-'):>8}  {i.settings.get('data', '')}")
    return 0


def cmd_show(args, ws) -> int:
    info = tokenizer_info(ws, args.name)
    if args.json:
        print_json(info.to_dict())
        return 0
    print(f"tokenizer {info.name}  ({info.path})")
    for title, d in (("settings", info.settings), ("stats", info.stats)):
        print(f"{title}:")
        for k, v in d.items():
            print(f"  {k}: {v}")
    return 0


def cmd_decode(args, ws) -> int:
    from workbench.errors import WorkbenchError

    tok = load_tokenizer(ws, args.name)
    ids = []
    for item in (x for arg in args.ids for x in arg.replace(",", " ").split()):
        try:
            i = int(item)
        except ValueError:
            raise WorkbenchError(f"token id {item!r} is not a whole number") from None
        if not 0 <= i < tok.vocab_size:
            raise WorkbenchError(f"token id {i} is out of range: tokenizer {args.name!r} has ids 0 to "
                                 f"{tok.vocab_size - 1}")
        ids.append(i)
    text = tok.decode(ids)
    if args.json:
        print_json({"text": text, "ids": ids, "pieces": [tok.surface(i) for i in ids]})
    else:
        print(text)
    return 0


def cmd_encode(args, ws) -> int:
    tok = load_tokenizer(ws, args.name)
    pieces = tok.pieces(args.text)
    if args.json:
        print_json({"ids": [i for i, _ in pieces], "pieces": [p for _, p in pieces], "count": len(pieces)})
        return 0
    print(f"{len(pieces)} tokens")
    print("ids:    " + " ".join(str(i) for i, _ in pieces))
    print("pieces: " + " | ".join(repr(p)[1:-1] for _, p in pieces))
    return 0
