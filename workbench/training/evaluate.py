"""Honest evaluation: a fixed held-out set, dropout off, token-weighted means.

Loss is the mean next-token cross-entropy over the first ``max_batches`` sequential windows of
the validation tokens (the same windows every time, so evaluations are comparable). Perplexity
is ``exp(mean loss)``; bits per byte is ``loss / ln 2 * tokens / bytes`` with the validation
split's own token and byte counts, so runs with different tokenizers compare. Top-1 and top-5
are teacher-forcing accuracies. The result names the precision the forward ran in (a run
evaluates in the precision it trains in; ``workbench eval --precision fp32`` re-checks in fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def evaluate(model, tokens, batch_size: int, seq_len: int, max_batches: int | None,
             bytes_per_token: float, device, precision=None) -> dict:
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total_loss = 0.0
    n = top1 = top5 = 0
    try:
        with torch.no_grad():
            for batch in tokens.windows(batch_size, seq_len, max_batches):
                b = torch.from_numpy(batch).to(device)
                x, y = b[:, :-1], b[:, 1:]
                ctx = precision.autocast(device) if precision is not None else _null()
                with ctx:
                    logits = model(x)
                logits = logits.float().reshape(-1, logits.shape[-1])
                y = y.reshape(-1)
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                k = min(5, logits.shape[-1])
                top = logits.topk(k, dim=-1).indices
                top1 += (top[:, 0] == y).sum().item()
                top5 += (top == y[:, None]).any(dim=-1).sum().item()
                n += y.numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no validation windows to evaluate")
    loss = total_loss / n
    return {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 700.0)),
        "bpb": loss / math.log(2) / bytes_per_token,
        "top1": top1 / n,
        "top5": top5 / n,
        "val_tokens": n,
        "precision": precision.name if precision is not None else "fp32",
    }


def _null():
    import contextlib

    return contextlib.nullcontext()


@dataclass(frozen=True)
class EvalRequest:
    """What `workbench eval` (and a sweep's full evaluation) scores: a run's checkpoint (latest
    by default) on its own validation split, or on another source tokenized with the run's
    tokenizer; ``batches`` None means every window; precision ``auto`` is the one it trained in."""

    run: str
    checkpoint: str | None = None
    data: str | None = None
    text_column: str = "text"
    batches: int | None = None
    precision: str = "auto"

    def __post_init__(self):
        from workbench.errors import WorkbenchError

        if self.batches is not None and (isinstance(self.batches, bool) or not isinstance(self.batches, int)
                                         or self.batches < 1):
            raise WorkbenchError(f"batches = {self.batches!r} is not allowed: expected a whole number >= 1, "
                                 "or none for every validation window")
        if self.precision not in PRECISIONS:
            raise WorkbenchError(f"precision = {self.precision!r} is not allowed: expected one of "
                                 f"{', '.join(PRECISIONS)}")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def evaluate_run(ws, req: EvalRequest, say=None) -> dict:
    """The eval verb: loss, perplexity, bits per byte and accuracy of ``req.run`` on the CPU;
    ``say`` hears which checkpoint was used when the default one could not be."""
    import shutil

    import torch

    from workbench.machine.device import resolve_precision
    from workbench.runs.folder import get_run
    from workbench.runs.load import load_run_model
    from workbench.data.prepare import ensure_prepared
    from workbench.data.tokens import run_data

    run = get_run(ws, req.run)
    model, tok, cfg, ckpt = load_run_model(run, req.checkpoint, say=say)
    if req.data:
        # tokenized with the run's own tokenizer, registered in the workspace under the run's name
        tdir = ws.tokenizer_path(f"run-{run.name}")
        if not tdir.exists():
            shutil.copytree(run.tokenizer_path(), tdir)
        dinfo = ensure_prepared(ws, tdir.name, req.data, req.text_column)
    else:
        dinfo = run_data(ws, run.name, run.raw_config().get("data") or {}, tok.sha256)
    dinfo.val.check_ids(cfg.model.vocab_size)
    device = torch.device("cpu")
    name = (run.status().get("precision") or "fp32") if req.precision == "auto" else req.precision
    m = evaluate(model, dinfo.val, cfg.train.batch_size, cfg.model.max_seq_len, req.batches,
                 dinfo.bytes_per_token("val"), device, resolve_precision(name, device))
    return {"run": run.name, "checkpoint": ckpt, "data": dinfo.name, **m}
