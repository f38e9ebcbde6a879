"""``workbench runs``: list, show and compare training runs, and export their curves as CSV."""

from __future__ import annotations

import argparse

from workbench.cli.common import add_command, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list, show and compare runs")
    s = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    ls = add_command(s, "list", "one line per run", cmd_list)
    ls.add_argument("--sort", metavar="ORDER", default="name",
                    help="name (default); bpb: best bits per byte first (how a sweep's runs rank); or "
                         "METRIC[:best|:last], any metric the runs logged (val_loss, top1, loss, ...), its best "
                         "(the default) or last value after smoothing: the best runs first, best being the "
                         "lowest value except for accuracies (top1, top5, ...acc...) and tok_s. Pinned runs "
                         "come first whatever the order")
    ls.add_argument("--smoothing", metavar="W", type=float, default=0.0,
                    help="the debiased EMA weight a METRIC order smooths with, 0 (raw, the default) to 0.99")
    ls.add_argument("--filter", metavar="REGEX", default=None,
                    help="only runs whose name or a tag matches (case-insensitive)")
    pn = s.add_parser("pin", help="pin a run: listed first, always drawn in the Runs pane (or --remove)")
    pn.add_argument("run")
    pn.add_argument("--remove", action="store_true", help="unpin it")
    pn.set_defaults(func=cmd_pin)
    tg = s.add_parser("tag", help="add tags to a run (or --remove them)")
    tg.add_argument("run")
    tg.add_argument("tags", nargs="+", metavar="TAG")
    tg.add_argument("--remove", action="store_true", help="remove these tags instead")
    tg.set_defaults(func=cmd_tag)
    nt = s.add_parser("note", help="show a run's note, or set it")
    nt.add_argument("run")
    nt.add_argument("text", nargs="?", default=None, help="the new note ('' clears it)")
    nt.set_defaults(func=cmd_note)
    add_command(s, "show", "config, status, checkpoints and latest metrics of a run", cmd_show, "run")
    cp = s.add_parser("compare", help="compare runs' validation loss, optionally against a baseline")
    cp.add_argument("runs", nargs="+")
    cp.add_argument("--baseline", default=None)
    cp.add_argument("--json", action="store_true")
    cp.add_argument("--csv", metavar="FILE", default=None,
                    help="write run − baseline (val loss, top-1) at the baseline's tokens as CSV ('-': stdout)")
    cp.set_defaults(func=cmd_compare)
    ex = s.add_parser("export-metrics", help="every logged point of runs as CSV, one row each")
    ex.add_argument("runs", nargs="+")
    ex.add_argument("--csv", metavar="FILE", required=True, help="the file to write ('-': stdout)")
    ex.set_defaults(func=cmd_export_metrics)
    hl = s.add_parser("health", help="per-layer gradient norm, update/weight, activation RMS and attention "
                                     "entropy: the newest record, or one quantity over steps")
    hl.add_argument("run")
    hl.add_argument("--quantity", metavar="Q", default=None,
                    help="grad_norm, update_ratio, act_rms or attn_entropy: a steps × layers table of it")
    hl.add_argument("--last", type=int, default=20, metavar="N", help="with --quantity: the last N records (20)")
    hl.add_argument("--json", action="store_true")
    hl.set_defaults(func=cmd_health)
    rn = s.add_parser("rename", help="rename a run")
    rn.add_argument("run")
    rn.add_argument("new_name")
    rn.set_defaults(func=cmd_rename)
    rm = s.add_parser("delete", help="delete a run and all its checkpoints")
    rm.add_argument("run")
    rm.add_argument("--yes", action="store_true", help="do not ask")
    rm.set_defaults(func=cmd_delete)
    for verb, what in (("pause", "pause a run that is training (every process, between steps)"),
                       ("resume", "let a paused run go on"),
                       ("stop", "stop a training run after its current step, keeping a checkpoint")):
        c = s.add_parser(verb, help=what)
        c.add_argument("run")
        c.set_defaults(func=cmd_control, verb=verb)


def cmd_control(args, ws) -> int:
    from workbench.runs.folder import get_run
    from workbench.training.trainer import request_control

    run = get_run(ws, args.run)
    state = run.status().get("state")
    if state not in ("running", "paused"):
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"run {args.run!r} is not training (its status is {state!r})")
    request_control(run.path, args.verb)
    print(f"asked run {args.run} to {args.verb}")
    return 0


def cmd_tag(args, ws) -> int:
    from workbench.runs.folder import get_run
    from workbench.runs.labels import set_tags

    run = get_run(ws, args.run)
    tags = set_tags(run.path, remove=args.tags) if args.remove else set_tags(run.path, add=args.tags)
    print(f"{args.run}: tags {', '.join(tags) or '(none)'}")
    return 0


def cmd_pin(args, ws) -> int:
    from workbench.runs.folder import get_run
    from workbench.runs.labels import set_pinned

    run = get_run(ws, args.run)
    set_pinned(run.path, not args.remove)
    print(f"{args.run}: {'unpinned' if args.remove else 'pinned'}")
    return 0


def cmd_note(args, ws) -> int:
    from workbench.runs.folder import get_run
    from workbench.runs.labels import read_labels, set_note

    run = get_run(ws, args.run)
    if args.text is None:
        print(read_labels(run.path)["note"])
        return 0
    note = set_note(run.path, args.text)
    print(f"{args.run}: note {'set' if note else 'cleared'}")
    return 0


def cmd_rename(args, ws) -> int:
    from workbench.runs.folder import rename_run

    run = rename_run(ws, args.run, args.new_name)
    print(f"renamed {args.run} -> {run.name}")
    return 0


def cmd_delete(args, ws) -> int:
    import sys

    from workbench.runs.folder import delete_run, get_run

    get_run(ws, args.run)  # a missing run is an error before any question
    if not args.yes:
        if not sys.stdin.isatty():
            from workbench.errors import WorkbenchError

            raise WorkbenchError(f"deleting run {args.run!r} needs --yes when not run from a terminal")
        if input(f"delete run {args.run!r} and all its checkpoints? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept")
            return 0
    delete_run(ws, args.run)
    print(f"deleted {args.run}")
    return 0


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def cmd_list(args, ws) -> int:
    from workbench.errors import WorkbenchError
    from workbench.runs.folder import summaries, summary_cells
    from workbench.runs.labels import compile_filter, matches
    from workbench.runs.metrics import parse_sort, sort_runs

    rx = compile_filter(args.filter)  # a bad pattern or order is refused before any run is read
    metric, which = parse_sort(args.sort)
    if not 0.0 <= args.smoothing < 1.0:
        raise WorkbenchError(f"--smoothing {args.smoothing} must be from 0 to 0.99")
    every, curves = summaries(ws, curves=which is not None)
    rows = sort_runs([r for r in every if matches(rx, r)], args.sort, curves, args.smoothing)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no run matches {args.filter!r} (of {len(every)})" if every else
              "no runs yet; start one with `workbench train --config debug --tokenizer NAME --data SOURCE`")
        return 0
    by = f" {metric + ' ' + which:>14}" if which else ""
    print(f"{'run':32} {'preset':12} {'params':>9} {'tokens':>11} {'best val':>8} {'bpb':>6} {'tok/s':>8} "
          f"{'status':11} {'created':19}{by}".rstrip())
    for r in rows:
        c = summary_cells(r, "{:,.0f}".format, "-")
        value = f" {_fmt(r['sort_value'], '.4g'):>14}" if which else ""
        pinned = "  pinned" if r.get("pinned") else ""
        print(f"{c['name']:32} {c['preset']:12} {c['params']:>9} {c['tokens']:>11} {c['val']:>8} {c['bpb']:>6} "
              f"{c['tok_s']:>8} {c['status']:11} {c['created']:19}{value}{pinned}".rstrip())
    return 0


def cmd_show(args, ws) -> int:
    from workbench.runs.folder import get_run

    run = get_run(ws, args.run)
    out = {"summary": run.summary(), "status": run.status(), "checkpoints": run.checkpoints(),
           "config": run.raw_config(), "last_samples": run.samples()[-2:],
           "data_evals": [r for r in run.metrics() if r.get("kind") == "data_eval"]}
    if args.json:
        print_json(out)
        return 0
    s = out["summary"]
    print(f"run {run.name}  ({run.path})")
    print(f"  status {s['status']}, step {s['steps']}, {s['tokens']:,} tokens, params {_fmt(s['params'], ',d')}")
    print(f"  best val loss {_fmt(s['best_val_loss'], '.4f')}, bits/byte {_fmt(s['best_bpb'], '.4f')}, "
          f"median tok/s {_fmt(s['tok_s'], ',.0f')}")
    print(f"  checkpoints: {', '.join(out['checkpoints']) or 'none'} (latest {s['checkpoint']})")
    if s.get("tags"):
        print(f"  tags: {', '.join(s['tags'])}")
    if s.get("note"):
        print(f"  note: {s['note']}")
    if s.get("problem"):
        print(f"  problem: {s['problem']}")
    origin = out["config"].get("init_from")
    if isinstance(origin, dict):
        print(f"  started from run {origin.get('run')} at {origin.get('checkpoint')}")
    for r in out["data_evals"][-5:]:  # `eval --data`: the latest few
        part = f", {r['split']} split" if r.get("split") in ("valid", "test") else ""
        print(f"  eval @ {r.get('checkpoint')} on {r.get('data')}{part}: loss {_fmt(r.get('val_loss'), '.4f')}, "
              f"bits/byte {_fmt(r.get('bpb'), '.4f')} ({r.get('time', '')})")
    for smp in out["last_samples"]:
        print(f"  sample @ step {smp['step']}: {smp['text'][:200]!r}")
    return 0


def cmd_health(args, ws) -> int:
    from workbench.runs.folder import get_run
    from workbench.training import health

    out = health.report(get_run(ws, args.run), args.quantity, max(1, args.last))
    if args.json:
        print_json(out)
        return 0
    print(f"run {out['run']}: model health at step {out['step']} ({out['records']} records)")
    if args.quantity is None:
        header, lines = health.table(out["latest"])
        widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(header)]
        for line in [header] + lines:
            print("  " + "  ".join(c.rjust(w) for c, w in zip(line, widths)))
    else:
        q = args.quantity
        n = max(len(r[q] or []) for r in out["history"])
        print(f"  {health.LABELS[q]}, one row per record, one column per layer")
        print("  " + f"{'step':>8}" + "".join(f"{'L' + str(i):>10}" for i in range(n)))
        for r in out["history"]:
            vals = (r[q] or []) + [None] * (n - len(r[q] or []))
            print("  " + f"{r['step']:>8}" + "".join(f"{health.fmt(q, v):>10}" for v in vals))
    for line in out["flags"]:
        print(f"  ! {line}")
    if not out["flags"]:
        print(f"  no layer flagged (update/weight outside [{health.LOW:g}, {health.HIGH:g}]; too small counts while "
              f"the learning rate is at least {health.LR_AWAKE:g} of its peak)")
    return 0


def cmd_export_metrics(args, ws) -> int:
    import sys

    from workbench.runs.curves_csv import metrics_table, write_csv
    from workbench.runs.folder import get_run

    n = write_csv(args.csv, *metrics_table([get_run(ws, name) for name in args.runs]))
    if args.csv != "-":
        print(f"wrote {n:,} rows of {', '.join(args.runs)} to {args.csv}", file=sys.stderr)
    return 0


def cmd_compare(args, ws) -> int:
    from workbench.errors import WorkbenchError
    from workbench.runs.compare import compare
    from workbench.runs.folder import get_run

    if args.csv is not None and not args.baseline:
        raise WorkbenchError("runs compare --csv writes each run's difference from a baseline: give --baseline RUN")
    runs = [get_run(ws, n) for n in args.runs]
    base = get_run(ws, args.baseline) if args.baseline else None
    out = compare(runs, base)
    if args.csv is not None:
        import sys

        from workbench.runs.curves_csv import compare_table, write_csv

        n = write_csv(args.csv, *compare_table(out))
        if args.csv != "-":
            print(f"wrote {n:,} rows to {args.csv}", file=sys.stderr)
        return 0
    if args.json:
        print_json(out)
        return 0
    print(f"{'run':32} {'tokens':>11} {'final val':>9} {'best val':>9} {'bpb':>6}")
    for r in out["runs"]:
        print(f"{r['name']:32} {r['tokens']:>11,} {_fmt(r['final_val_loss'], '.4f'):>9} "
              f"{_fmt(r['best_val_loss'], '.4f'):>9} {_fmt(r['best_bpb'], '.3f'):>6}")
    for e in out["data_evals"]:  # `eval --data`: a test split, another text
        part = f", {e['split']} split" if e.get("split") in ("valid", "test") else ""
        print(f"\non {e['data']}{part} (workbench eval --data):")
        for r in e["runs"]:
            print(f"  {r['name']:32} loss {_fmt(r['val_loss'], '.4f')}, bits/byte {_fmt(r['bpb'], '.4f')}, "
                  f"top-1 {_fmt(r['top1'], '.4f')} @ {r['checkpoint']}")
    if base is not None:
        print(f"\nbaseline {base.name}: final val loss {out['baseline_final_loss']:.4f}")
        for r in out["vs_baseline"]:
            t = r["tokens_to_baseline_final"]
            last = r["diff_vs_baseline"][-1] if r["diff_vs_baseline"] else None
            acc = r["top1_diff_vs_baseline"][-1][1] if r["top1_diff_vs_baseline"] else None
            ratio = f" ({r['ratio_to_baseline']:.2f}x the baseline's)" if r["ratio_to_baseline"] else ""
            at = f" ({last[0]:,} tokens)" if last else ""
            print(f"  {r['name']:32} reaches it at {_fmt(t, ',.0f')} tokens{ratio}; at the last shared "
                  f"point{at} val loss {_fmt(last[1] if last else None, '+.4f')}, top-1 {_fmt(acc, '+.4f')}")
    return 0
