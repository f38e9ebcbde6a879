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
import time
from dataclasses import dataclass


def evaluate(model, tokens, batch_size: int, seq_len: int, max_batches: int | None,
             bytes_per_token: float, device, precision=None, progress=None) -> dict:
    """``progress(done, total)`` hears each batch (batches of windows)."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total_loss = 0.0
    n = top1 = top5 = 0
    total = -(-tokens.n_windows(seq_len) // batch_size)
    total = min(total, max_batches) if max_batches is not None else total
    try:
        with torch.no_grad():
            for done, batch in enumerate(tokens.windows(batch_size, seq_len, max_batches), 1):
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
                if progress is not None:
                    progress(done, total)
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
    split: str | None = None  # with data: a folder's "test" or "valid" files (see sources.eval_source)

    def __post_init__(self):
        from workbench.errors import WorkbenchError

        if self.batches is not None and (isinstance(self.batches, bool) or not isinstance(self.batches, int)
                                         or self.batches < 1):
            raise WorkbenchError(f"batches = {self.batches!r} is not allowed: expected a whole number >= 1, "
                                 "or none for every validation window")
        if self.split is not None and self.data is None:
            raise WorkbenchError("--split picks the files of --data; a run's own evaluation uses its validation split")
        if self.precision not in PRECISIONS:
            raise WorkbenchError(f"precision = {self.precision!r} is not allowed: expected one of "
                                 f"{', '.join(PRECISIONS)}")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def evaluate_run(ws, req: EvalRequest, say=None, progress=None) -> dict:
    """The eval verb: loss, perplexity, bits per byte and accuracy of ``req.run`` on the CPU;
    ``say`` hears which checkpoint was used when the default one could not be; ``progress(done,
    total)`` each batch evaluated.

    Without ``req.data``: the run's own validation split. With it: all of a file, or a folder's
    test (or validation) files, tokenized with the run's tokenizer into a temporary file outside
    the workspace (nothing is left behind), and the result is recorded in the run's
    ``metrics.jsonl`` as a ``data_eval`` row naming the data, the part and the checkpoint."""
    import torch

    from workbench.machine.device import resolve_precision
    from workbench.runs.folder import get_run
    from workbench.runs.load import load_run_model
    from workbench.data.tokens import run_data

    run = get_run(ws, req.run)
    source = None
    if req.data:
        from workbench.data.sources import eval_source

        source, part = eval_source(req.data, req.text_column, req.split)  # refused before the model loads
    model, tok, cfg, ckpt = load_run_model(run, req.checkpoint, say=say)
    device = torch.device("cpu")
    name = (run.status().get("precision") or "fp32") if req.precision == "auto" else req.precision
    precision = resolve_precision(name, device)
    if source is None:
        dinfo = run_data(ws, run.name, run.raw_config().get("data") or {}, tok.sha256)
        dinfo.val.check_ids(cfg.model.vocab_size)
        m = evaluate(model, dinfo.val, cfg.train.batch_size, cfg.model.max_seq_len, req.batches,
                     dinfo.bytes_per_token("val"), device, precision, progress)
        return {"run": run.name, "checkpoint": ckpt, "data": dinfo.name, **m}
    m = _evaluate_source(model, tok, source, cfg, req.batches, device, precision, progress)
    what = _describe(source)
    row = {"kind": "data_eval", "step": _step_of(ckpt), "checkpoint": ckpt, "data": what,
           "spec": req.data, "split": part, "fingerprint": source.fingerprint(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **m}
    from workbench.runs.folder import append_jsonl

    append_jsonl(run.path / "metrics.jsonl", row)
    return {"run": run.name, "checkpoint": ckpt, "data": what, "split": part, **m}


def _describe(source) -> str:
    """The evaluated data in a few words: the file, or the folder and the files taken from it."""
    if source.kind != "local":
        return source.describe()
    files = source.files["validation"]
    if files == [source.path]:
        return str(source.path)
    names = ", ".join(f.name for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"{source.path} ({names})"


def _evaluate_source(model, tok, source, cfg, batches, device, precision, progress=None) -> dict:
    """``evaluate`` on the documents of ``source``'s validation split, tokenized as data prepare
    does into a temporary file that is removed afterwards."""
    import os
    import tempfile
    from pathlib import Path

    from workbench.data.prepare import write_split
    from workbench.data.tokens import TokenFile, token_dtype
    from workbench.errors import WorkbenchError

    dtype = token_dtype(tok.vocab_size)
    with tempfile.TemporaryDirectory(prefix="workbench-eval-") as d:
        path = Path(d) / "eval.bin"
        stats = write_split(source, "validation", path, dtype, tok, os.cpu_count() or 1, None, None, "val")
        if not stats["documents"]:
            raise WorkbenchError(f"{source.describe()} holds no documents to evaluate")
        if stats["tokens"] < cfg.model.max_seq_len + 1:
            raise WorkbenchError(f"{source.describe()} holds {stats['tokens']} tokens, fewer than one window of "
                                 f"model.max_seq_len + 1 = {cfg.model.max_seq_len + 1}; evaluate on more text")
        tokens = TokenFile(path, dtype, stats["tokens"])
        m = evaluate(model, tokens, cfg.train.batch_size, cfg.model.max_seq_len, batches,
                     stats["bytes"] / max(1, stats["tokens"]), device, precision, progress)
    return {**m, "documents": stats["documents"], "bytes": stats["bytes"]}


def _step_of(checkpoint_name: str) -> int:
    try:
        return int(checkpoint_name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return 0
