"""``workbench trace``: print the shape trace of one forward pass as a tree (or write JSON).

The model comes from a config (``--config PATH|PRESET``, freshly initialised) or from a run
(``--run RUN``, its latest checkpoint). Input tokens come from ``--text`` encoded with a real
tokenizer (the run's own, or ``--tokenizer NAME`` from the workspace) or, without text,
``--tokens N`` random ids. There is no byte-level stand-in for a tokenizer: text is only ever
encoded the way the model would see it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import WorkbenchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="trace one forward pass: every call's shapes, stats and FLOPs",
                       description=__doc__.split("\n\n")[0].replace("``", "`"))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="PATH|PRESET", help="a config YAML or preset name "
                     "(workspace models/ first, then the packaged presets); weights are random")
    src.add_argument("--run", metavar="RUN", help="a run in trained_models/; uses its latest checkpoint")
    p.add_argument("--text", metavar="T", help="text to encode as the input (needs a tokenizer)")
    p.add_argument("--tokenizer", metavar="NAME",
                   help="workspace tokenizer (tokenizers/NAME/tokenizer.model) for --text with --config")
    p.add_argument("--tokens", type=int, default=8, metavar="N",
                   help="without --text: trace N random token ids (default 8)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="batch size (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for init and random ids (default 0)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="show calls at most N levels below the model (default: all)")
    p.add_argument("--json", metavar="PATH", help="also write the whole trace as JSON to PATH")
    p.add_argument("--meta", action="store_true",
                   help="trace on the meta device: shapes and FLOPs only, no memory for weights")
    p.set_defaults(func=run)


def run(args, ws) -> int:
    import torch

    from ..config import load_config, read_config
    from ..estimate import available_memory, flops_per_token, fmt_bytes, param_count
    from ..fileio import write_json
    from ..model import build_model
    from ..trace import render_text, trace_model

    if args.batch < 1 or args.tokens < 1:
        raise WorkbenchError("--batch and --tokens must be at least 1")
    if args.depth is not None and args.depth < 0:
        raise WorkbenchError("--depth must be 0 or more")

    run_dir = None
    if args.run:
        run_dir = ws.run_path(args.run)
        if not run_dir.is_dir():
            raise WorkbenchError(f"run {args.run!r} not found in {ws.runs_dir()}")
        cfg = read_config(run_dir / "config.yaml")
        source = f"run {args.run}"
    else:
        cfg = load_config(args.config, ws)
        source = f"config {args.config}"
    mc = cfg.model

    ids = _input_ids(args, ws, run_dir, mc)
    T = len(ids) if ids is not None else args.tokens
    if T > mc.max_seq_len:
        raise WorkbenchError(f"the input has {T} tokens but the model's max_seq_len is "
                             f"{mc.max_seq_len}; shorten --text or lower --tokens")

    n_params = param_count(mc)
    if not args.meta:
        need, have = 4 * n_params, available_memory("cpu")["available"]
        if need > 0.8 * have:
            raise WorkbenchError(f"the weights alone need {fmt_bytes(need)} and only "
                                 f"{fmt_bytes(have)} of RAM is free; use --meta to trace shapes")

    device = "meta" if args.meta else "cpu"
    model = build_model(mc, device=device, seed=args.seed)
    checkpoint = None
    if run_dir is not None and not args.meta:
        from ..checkpoint import load_weights

        checkpoint = load_weights(model, run_dir)
    model.eval()

    if ids is not None:
        idx = torch.tensor([ids] * args.batch, dtype=torch.long, device=device)
    else:
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randint(0, mc.vocab_size, (args.batch, T), generator=g).to(device)

    trace = trace_model(model, idx)
    est = flops_per_token(mc, T)["forward"] * args.batch * T

    header = [f"{source}: {n_params:,} parameters, input ({args.batch}, {T}) on {device}"
              + (f", checkpoint {checkpoint}" if checkpoint else "")
              + ("" if ids is not None else " (random token ids)"),
              f"forward FLOPs: traced {trace.total_flops:,}, estimated {est:,}"]
    print("\n".join(header))
    print(render_text(trace, depth=args.depth))
    if args.json:
        out = {"source": source, "checkpoint": checkpoint, "model": mc.to_dict(),
               "input_shape": [args.batch, T], "estimated_flops": est, **trace.to_dict()}
        write_json(Path(args.json), out)
        print(f"wrote {args.json}")
    return 0


def _input_ids(args, ws, run_dir, mc) -> list[int] | None:
    if args.text is None:
        if args.tokenizer:
            raise WorkbenchError("--tokenizer is used only with --text")
        return None
    if args.tokenizer:
        model_file = ws.tokenizer_path(args.tokenizer) / "tokenizer.model"
        if not model_file.is_file():
            raise WorkbenchError(f"tokenizer {args.tokenizer!r} not found: {model_file} does not exist")
    elif run_dir is not None:
        model_file = run_dir / "tokenizer" / "tokenizer.model"
        if not model_file.is_file():
            raise WorkbenchError(f"run has no tokenizer at {model_file}; pass --tokenizer NAME")
    else:
        raise WorkbenchError("--text needs a tokenizer: pass --tokenizer NAME (from the "
                             "workspace's tokenizers/), use --run, or drop --text to trace "
                             "--tokens N random ids")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    if sp.vocab_size() > mc.vocab_size:
        raise WorkbenchError(f"tokenizer has {sp.vocab_size()} pieces but the model's "
                             f"vocab_size is {mc.vocab_size}")
    ids = sp.encode(args.text)
    if not ids:
        raise WorkbenchError("--text encodes to no tokens")
    return ids
