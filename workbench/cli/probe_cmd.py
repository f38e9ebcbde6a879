"""``workbench probe``: what this machine measured once and keeps (the matmul probe behind
``precision: auto``, attention kernels, the planner's speeds), and measuring it again."""

from __future__ import annotations

import argparse

from workbench.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="this machine's cached measurements (precision, kernels, planner speeds)")
    p.add_argument("--remeasure", metavar="KIND", action="append", default=[],
                   choices=("all", "matmul", "attention", "speed"),
                   help="drop a kind of measurement (repeatable): matmul is measured again now, attention and "
                        "speed when next needed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args, ws) -> int:
    from workbench.machine import probe

    gone = probe.forget(args.remeasure) if args.remeasure else []
    if gone and ("all" in args.remeasure or "matmul" in args.remeasure):
        probe.matmul_probe(measure=True)
    entries = probe.cached_entries()
    if args.json:
        print_json({"file": str(probe.cache_file()), "dropped": gone, "entries": entries})
        return 0
    if args.remeasure:
        print(f"dropped {len(gone)} measurement(s)" + (": " + ", ".join(gone[:5]) + (" …" if len(gone) > 5 else "")
                                                       if gone else ""))
    print(f"cache: {probe.cache_file()}")
    m = entries.get("matmul")
    if m:
        print(f"matmul: fp32 {m['fp32_gflops']:g} GFLOP/s, bf16 {m['bf16_gflops']:g} GFLOP/s "
              f"({m['bf16_speedup']:g}x), {m.get('threads', '?')} thread(s), measured {m.get('measured', '?')}")
    else:
        print("matmul: not measured yet (the first training with precision auto measures it)")
    for kind in ("attention", "speed"):
        keys = [k for k in entries if probe.KINDS[kind](k)]
        print(f"{kind}: {len(keys)} shape(s) measured" + ("" if keys else " (measured when first needed)"))
    return 0
