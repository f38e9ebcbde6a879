"""``workbench data``: pretokenize a data source into token files, and inspect them."""

from __future__ import annotations

import argparse
import sys

from workbench.data.sources import DEFAULT_HUB_ID
from workbench.data.tokens import data_info, list_data
from workbench.data.prepare import prepare_data
from workbench.cli.common import ProgressLine, add_command, listed, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="pretokenize data and inspect prepared data")
    s = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    pr = s.add_parser("prepare", help="tokenize a source into train/val token files")
    pr.add_argument("--tokenizer", required=True, metavar="NAME", help="a tokenizer under tokenizers/")
    pr.add_argument("--data", default=DEFAULT_HUB_ID, metavar="SOURCE",
                    help=f"hub dataset id or local .txt/.jsonl/.json/.parquet file or folder (default {DEFAULT_HUB_ID})")
    pr.add_argument("--text-column", default="text")
    pr.add_argument("--name", default=None, help="folder name under data/ (default TOKENIZER-SOURCE-FINGERPRINT)")
    pr.add_argument("--threads", type=int, default=None, help="encoding threads (default: one per core)")
    pr.add_argument("--force", action="store_true",
                    help="replace a data folder of this name that holds another source or tokenizer's tokens")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_prepare)

    add_command(s, "list", "list prepared data", cmd_list)
    add_command(s, "info", "what a prepared data folder holds", cmd_info, "name")
    ck = s.add_parser("check", help="read a local source end to end and report every problem (changes nothing)")
    ck.add_argument("source", metavar="SOURCE", help="a local .txt/.jsonl/.json/.parquet file or a folder of them")
    ck.add_argument("--text-column", default="text")
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(func=cmd_check)


def cmd_prepare(args, ws) -> int:
    line = ProgressLine("prepare")
    try:
        info = prepare_data(
            ws, args.tokenizer, args.data, args.text_column, name=args.name, workers=args.threads, replace=args.force,
            progress=lambda split, done, total, msg: line.update(done, total, f"{split}: {msg}"),
        )
    finally:
        line.close()
    return _report(info, args.json, f"prepared {info.name} in {info.meta['seconds']:.1f} s")


def _print_info(info) -> None:
    m = info.meta
    print(f"  folder:    {info.path}")
    print(f"  tokenizer: {m['tokenizer']['name']} (vocab {m['tokenizer']['vocab_size']}, sha256 {m['tokenizer']['sha256'][:12]})")
    print(f"  source:    {m['source']['description']}")
    print(f"  dtype:     {m['dtype']}")
    for split, s in m["splits"].items():
        print(f"  {split:5} {info.path / s['file']}: {s['tokens']:,} tokens, {s['documents']:,} documents, "
              f"{s['bytes']:,} bytes ({s['bytes'] / max(1, s['tokens']):.2f} bytes/token)")


def cmd_list(args, ws) -> int:
    damaged: list[str] = []
    infos = list_data(ws, damaged)
    for line in damaged:
        print(f"damaged: {line}", file=sys.stderr)
    if listed(infos, args.json, "no prepared data yet; run `workbench data prepare --tokenizer NAME --data SOURCE`"):
        return 0
    for i in infos:
        sp = i.meta["splits"]
        print(f"{i.name:40} train {sp['train']['tokens']:>12,} tokens  val {sp['val']['tokens']:>10,} tokens")
    return 0


def cmd_check(args, ws) -> int:
    from workbench.data.check import check_source

    line = ProgressLine("check")
    try:
        report = check_source(args.source, args.text_column, progress=lambda done, total: line.update(done, total))
    finally:
        line.close()
    if args.json:
        print_json(report.to_dict())
        return 0 if report.clean else 1
    cs = report.charset()
    if cs["distinct"]:
        print(f"characters: {cs['distinct']:,} distinct in {cs['characters']:,}; {100 * cs['non_ascii_share']:.2f}% "
              "outside ASCII; rarest: " + ", ".join(f"{c!r} {n:,}" for c, n in cs["rarest"]))
        if cs["control"]:
            print("control characters: " + ", ".join(f"{c!r} {n:,}" for c, n in cs["control"]))
    for p in report.problems:
        print(p.text())
    for where, n in report.more.items():
        print(f"{where}: {n:,} more of this kind not listed")
    n = len(report.problems) + sum(report.more.values())
    files = f"{len(report.files)} file{'s' if len(report.files) != 1 else ''}"
    print(f"{'no problems' if not n else f'{n:,} problem' + ('s' if n != 1 else '')} in {files}: "
          f"{report.documents:,} document{'s' if report.documents != 1 else ''}, {report.bytes:,} bytes read")
    return 0 if report.clean else 1


def cmd_info(args, ws) -> int:
    from workbench.data.stats import data_stats

    info = data_info(ws, args.name)
    tok = _tokenizer_of(ws, info)
    stats = None
    if tok is not None:
        info.check_ids(tok.vocab_size)
        line = ProgressLine("read")
        try:
            stats = data_stats(info, tok, progress=lambda split, done, total: line.update(done, total, split))
        finally:
            line.close()
    if args.json:
        print_json({**info.to_dict(), "stats": stats})
        return 0
    print(f"data {info.name}")
    _print_info(info)
    if stats is None:
        print("  (its tokenizer is not in tokenizers/ any more: no statistics by token)")
        return 0
    for split, s in stats.items():
        t, b = s["tokens_per_document"], s["bytes_per_document"]
        print(f"  {split}: {s['documents']:,} documents; tokens each: min {t['min']:,}, median {t['median']:,.0f}, "
              f"95% {t['p95']:,.0f}, max {t['max']:,}; bytes each: min {b['min']:,}, median {b['median']:,.0f}, "
              f"95% {b['p95']:,.0f}, max {b['max']:,}")
        print(f"    byte-fallback tokens {100 * s['byte_fallback_share']:.2f}%; most frequent: "
              + ", ".join(f"{r['piece']!r} {100 * r['share']:.1f}%" for r in s["top"]))
    return 0


def _tokenizer_of(ws, info):
    """The tokenizer the data was made with (by its hash), or None when it is gone."""
    from pathlib import Path

    from workbench.errors import WorkbenchError
    from workbench.tokenizer.tokenizer import Tokenizer

    want = info.meta["tokenizer"]["sha256"]
    for path in (ws.tokenizer_path(info.meta["tokenizer"]["name"]), Path(info.meta.get("tokenizer_path") or "")):
        try:
            tok = Tokenizer.load(path)
        except (WorkbenchError, OSError):
            continue
        if tok.sha256 == want:
            return tok
    return None


def _report(info, as_json: bool, title: str) -> int:
    if as_json:
        print_json(info.to_dict())
    else:
        print(title)
        _print_info(info)
    return 0
