"""``workbench eval``: evaluate a run's checkpoint on its validation data or another source."""

from __future__ import annotations

import argparse

from .common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="validation loss, perplexity, bits per byte and accuracy of a run")
    p.add_argument("run")
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help="evaluate on the validation split of this source instead of the run's own")
    p.add_argument("--text-column", default="text")
    p.add_argument("--checkpoint", default=None, help="checkpoint name (default: latest)")
    p.add_argument("--batches", type=int, default=None, help="number of batches (default: all validation windows)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="number format of the forward pass (default auto: the one the run trained in)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args, ws) -> int:
    from ..evaluate import evaluate
    from ..runs import get_run, load_run_model
    from ..tokens import ensure_prepared, run_data

    run = get_run(ws, args.run)
    model, tok, cfg, ckpt = load_run_model(run, args.checkpoint)
    meta = run.raw_config().get("data") or {}
    if args.data:
        # Tokenize with the run's own tokenizer, registered in the workspace under the run's name.
        import shutil

        tdir = ws.tokenizer_path(f"run-{run.name}")
        if not tdir.exists():
            shutil.copytree(run.tokenizer_path(), tdir)
        dinfo = ensure_prepared(ws, tdir.name, args.data, args.text_column)
    else:
        dinfo = run_data(ws, run.name, meta, tok.sha256)
    import torch

    from ..device import resolve_precision

    device = torch.device("cpu")
    name = args.precision
    if name == "auto":
        name = run.status().get("precision") or "fp32"
    precision = resolve_precision(name, device)
    m = evaluate(model, dinfo.val, cfg.train.batch_size, cfg.model.max_seq_len, args.batches,
                 dinfo.bytes_per_token("val"), device, precision)
    out = {"run": run.name, "checkpoint": ckpt, "data": dinfo.name, **m}
    if args.json:
        print_json(out)
    else:
        print(f"run {run.name} @ {ckpt} on {dinfo.name} ({m['val_tokens']:,} tokens, {m['precision']})")
        print(f"  loss {m['val_loss']:.4f}  ppl {m['val_ppl']:.2f}  bits/byte {m['bpb']:.4f}  "
              f"top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}")
    return 0
