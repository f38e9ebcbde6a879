"""The trace verb: ``run_trace(ws, TraceRequest)`` builds the model a request names (a config,
preset or run checkpoint), checks it fits in memory (else traces on the ``meta`` device), traces
one forward and returns the trace and a summary. The CLI and the Trace pane both call it.
"""

from __future__ import annotations


import torch
from workbench.tracing.tracer import trace_model


# --- the trace verb --------------------------------------------------------------------------


def run_trace(ws, req, available=None, say=None) -> tuple[dict, dict]:
    """Carry out a ``TraceRequest``: build the model, load the checkpoint, encode the text, trace
    one forward. Returns (result, kept tensors); ``result`` is plain JSON — the request's source,
    the checkpoint, the model config, parameters, input shape, token ids and their labels, the
    estimated forward FLOPs and the trace. ``available(device)`` says the free memory (default:
    ``estimate.available_memory``); ``say`` hears a fall-back to an older checkpoint. Bad input
    raises a ``WorkbenchError`` naming the field."""
    from workbench.runs.checkpoint import load_weights
    from workbench.config.schema import load_config
    from workbench.errors import WorkbenchError
    from workbench.machine.estimate import TIGHT_FRACTION, available_memory, fmt_bytes
    from workbench.config.sizes import flops_per_token, param_count
    from workbench.model import build_model
    from workbench.runs.folder import get_run, run_config
    from workbench.tokenizer.tokenizer import Tokenizer, load_tokenizer
    from workbench.tracing.request import INIT

    run = None
    if req.run:
        run = get_run(ws, req.run)
        cfg = run_config(run)
    else:
        cfg = load_config(req.config, ws)
    if req.sets:
        from workbench.config.overrides import apply_overrides, parse_overrides

        sets = parse_overrides(list(req.sets))
        if any(sets[s] for s in sets if s != "model"):
            other = [f"{s}.{k}" for s in sets if s != "model" for k in sets[s]]
            raise WorkbenchError(f"--set {other[0]} does not change a trace: it runs no training, only "
                                 "model.* fields apply")
        cfg = apply_overrides(cfg, sets)
    mc = cfg.model
    tok = None
    if req.text is not None:
        if req.tokenizer:
            tok = load_tokenizer(ws, req.tokenizer)
        elif run is not None:
            tok = Tokenizer.load(run.tokenizer_path())
        else:
            raise WorkbenchError("text needs a tokenizer to encode it: choose a tokenizer, trace a run "
                                 "(its own tokenizer), or trace random ids without text")
        if tok.vocab_size > mc.vocab_size:
            raise WorkbenchError(f"tokenizer: it has {tok.vocab_size} pieces but the model's vocab_size "
                                 f"is {mc.vocab_size}; choose another tokenizer or trace random ids")
        ids = tok.encode(req.text)
        if not ids:
            raise WorkbenchError("text encodes to no tokens")
        labels = [tok.surface(i) for i in ids]
        if len(ids) > mc.max_seq_len:
            raise WorkbenchError(f"text: it has {len(ids)} tokens but the model's max_seq_len is "
                                 f"{mc.max_seq_len}; shorten it")
    else:
        if req.tokens > mc.max_seq_len:
            raise WorkbenchError(f"tokens = {req.tokens} is not allowed: the model's max_seq_len is "
                                 f"{mc.max_seq_len}")
        g = torch.Generator().manual_seed(req.seed)
        ids = torch.randint(0, mc.vocab_size, (req.tokens,), generator=g).tolist()
        labels = [str(i) for i in ids]

    n_params = param_count(mc)
    if not req.meta:
        need, have = 4 * n_params, (available or available_memory)("cpu")["available"]
        if need > TIGHT_FRACTION * have:
            raise WorkbenchError(f"the weights alone need {fmt_bytes(need)} and only {fmt_bytes(have)} "
                                 f"of RAM is free: trace on the meta device to see shapes and FLOPs")
    device = "meta" if req.meta else "cpu"
    model = build_model(mc, device=device, seed=req.seed)
    checkpoint = None
    if run is not None:
        if req.checkpoint == INIT:
            checkpoint = "random init"
        elif req.meta:
            checkpoint = "not loaded (meta)"
        else:
            checkpoint = load_weights(model, run.path, req.checkpoint, say=say)
    model.eval()
    idx = torch.tensor([ids] * req.batch, dtype=torch.long, device=device)
    trace = trace_model(model, idx, keep=tuple(req.keep))
    T = len(ids)
    result = {"source": req.source, "checkpoint": checkpoint, "model": mc.to_dict(), "params": n_params,
              "device": device, "input_shape": [req.batch, T], "text": req.text, "tokens": ids,
              "labels": labels, "random_ids": req.text is None,
              "estimated_flops": flops_per_token(mc, T)["forward"] * req.batch * T, **trace.to_dict()}
    return result, trace.tensors
