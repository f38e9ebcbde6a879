"""Shape tracing: a record of every module call and named intermediate in one forward pass.

Model modules derive from ``LoggingModule``. Inside a module, ``self.log(name, tensor)``
records a named intermediate (attention's q, k, v, scores, probs). Outside a trace that is one
attribute test and a return: tracing is switched on per model by setting ``_tracer`` on its
modules, so it costs nothing when off and never leaks into another model (or thread).

``trace_model(model, idx)`` runs one forward under forward hooks and ``FlopCounterMode`` and
returns a ``Trace``: a tree of ``Call`` nodes (path, class, named inputs/outputs, parameters,
FLOPs, logged intermediates), each tensor summarised by shape, dtype, device, min/max/mean/std
and its count of non-finite values. ``Trace.to_dict()`` is plain JSON; ``render_text`` prints it.
On the ``meta`` device (configs too large for RAM) records carry shapes only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from torch import nn


class LoggingModule(nn.Module):
    """Base of every model module: ``self.log`` records a named tensor while a trace is active."""

    _tracer: Optional["_Tracer"] = None  # set on instances only for the duration of a trace

    def log(self, name: str, tensor: torch.Tensor, where: Optional[torch.Tensor] = None) -> None:
        """Record ``tensor`` as ``name``; ``where`` (broadcastable bool) limits the stats."""
        tracer = self._tracer
        if tracer is not None:
            tracer.record_log(self, name, tensor, where)


# ---------------------------------------------------------------- tensor records

def tensor_record(t: torch.Tensor, where: Optional[torch.Tensor] = None) -> dict:
    """Shape, dtype, device and (off the meta device) value stats of one tensor."""
    rec: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                           "device": str(t.device)}
    if t.device.type == "meta":
        return rec
    with torch.no_grad():
        x = t.detach()
        if where is not None:
            x = x.masked_select(where.to(x.device))
        x = x.abs().float() if x.is_complex() else x.float()
        n = x.numel()
        finite = torch.isfinite(x)
        n_finite = int(finite.sum())
        rec["nonfinite"] = n - n_finite
        if n_finite:
            xf = x if n_finite == n else x[finite]
            rec["min"], rec["max"] = float(xf.min()), float(xf.max())
            rec["mean"] = float(xf.mean())
            rec["std"] = float(xf.std()) if n_finite > 1 else 0.0
        else:
            rec["min"] = rec["max"] = rec["mean"] = rec["std"] = None
    return rec


def _records(prefix: str, value: Any, out: dict) -> None:
    """Flatten tensors inside (possibly nested) tuples/lists/dicts into name -> record."""
    if isinstance(value, torch.Tensor):
        out[prefix] = tensor_record(value)
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _records(f"{prefix}.{i}" if prefix else str(i), v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _records(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None and not isinstance(value, (int, float, str, bool)):
        out[prefix] = {"type": type(value).__name__}


def _has_nonfinite(records: dict) -> bool:
    return any(r.get("nonfinite") for r in records.values())


# ---------------------------------------------------------------- the tree

@dataclass
class Call:
    """One module call: where it sits, what went in and out, its cost, what it logged."""

    path: str
    cls: str
    params: int          # parameters of this module and its children
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)
    flops: int = 0       # this call and everything it called
    self_flops: int = 0  # excluding child calls
    children: list = field(default_factory=list)
    nan_origin: bool = False  # non-finite values first appear in this call (innermost)
    _origin_below: bool = field(default=False, repr=False)

    def to_dict(self) -> dict:
        return {"path": self.path, "class": self.cls, "params": self.params,
                "flops": self.flops, "self_flops": self.self_flops, "nan_origin": self.nan_origin,
                "inputs": self.inputs, "outputs": self.outputs, "logs": self.logs,
                "children": [c.to_dict() for c in self.children]}

    def walk(self) -> Iterator["Call"]:
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class Trace:
    root: Call
    total_flops: int
    device: str
    # (path, name) of every record in the order it was made; used to find where NaN appeared
    events: list = field(default_factory=list)
    # (path, name) -> CPU copy of the logged tensors named in trace_model(keep=...); not in to_dict
    tensors: dict = field(default_factory=dict)

    def calls(self) -> Iterator[Call]:
        return self.root.walk()

    def find(self, path: str) -> Call:
        for c in self.calls():
            if c.path == path:
                return c
        raise KeyError(path)

    def first_nonfinite(self) -> Optional[tuple[str, str]]:
        """(call path, record name) of the first record holding NaN/Inf, in execution order."""
        for path, name, rec in self.events:
            if rec.get("nonfinite"):
                return path, name
        return None

    def to_dict(self) -> dict:
        first = self.first_nonfinite()
        return {"total_flops": self.total_flops, "device": self.device,
                "first_nonfinite": None if first is None else {"path": first[0], "name": first[1]},
                "root": self.root.to_dict()}


# ---------------------------------------------------------------- the tracer

_SIGNATURES: dict[type, inspect.Signature] = {}


def _named_inputs(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    sig = _SIGNATURES.get(type(module))
    if sig is None:
        sig = _SIGNATURES[type(module)] = inspect.signature(module.forward)
    try:
        bound = sig.bind(*args, **kwargs)
        items = bound.arguments.items()
    except TypeError:
        items = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    out: dict = {}
    for name, value in items:
        _records(name, value, out)
    return out


class _Tracer:
    def __init__(self, model: nn.Module, flops: bool, keep: tuple = ()):
        self.model = model
        self.keep, self.tensors = set(keep), {}
        self.paths = {id(m): (name or "") for name, m in model.named_modules()}
        self.stack: list[Call] = []
        self.root: Optional[Call] = None
        self.events: list = []
        self.flop_mode = None
        if flops:
            from torch.utils.flop_counter import FlopCounterMode

            register_cpu_sdpa_flops()
            self.flop_mode = FlopCounterMode(display=False)
        self.flops_at_start: list[int] = []

    def _flops_now(self) -> int:
        return self.flop_mode.get_total_flops() if self.flop_mode is not None else 0

    def pre_hook(self, module, args, kwargs):
        path = self.paths.get(id(module), type(module).__name__)
        params = sum(p.numel() for p in module.parameters())
        call = Call(path, type(module).__name__, params, inputs=_named_inputs(module, args, kwargs))
        for name, rec in call.inputs.items():
            self.events.append((path, f"in:{name}", rec))
        if self.stack:
            self.stack[-1].children.append(call)
        elif self.root is None:
            self.root = call
        self.stack.append(call)
        self.flops_at_start.append(self._flops_now())

    def post_hook(self, module, args, kwargs, output):
        call = self.stack.pop()
        call.flops = self._flops_now() - self.flops_at_start.pop()
        call.self_flops = call.flops - sum(c.flops for c in call.children)
        _records("out", output, call.outputs)
        for name, rec in call.outputs.items():
            self.events.append((call.path, name, rec))
        # the innermost call whose inputs were finite but whose results are not
        below = any(c.nan_origin or c._origin_below for c in call.children)
        call._origin_below = below
        call.nan_origin = not below and not _has_nonfinite(call.inputs) and (
            _has_nonfinite(call.outputs) or _has_nonfinite(call.logs))

    def record_log(self, module, name: str, tensor: torch.Tensor, where) -> None:
        rec = tensor_record(tensor, where)
        if self.stack:
            self.stack[-1].logs[name] = rec
        path = self.paths.get(id(module), "")
        self.events.append((path, name, rec))
        if name in self.keep and tensor.device.type != "meta":
            self.tensors[(path, name)] = tensor.detach().to("cpu", copy=True)


def trace_model(model: nn.Module, idx: torch.Tensor, flops: bool = True, keep: tuple = (),
                **forward_kwargs) -> Trace:
    """Run ``model(idx, **forward_kwargs)`` once without gradients and return its trace.

    ``keep`` names logged intermediates (e.g. ``("probs",)``) whose values are kept, on the
    CPU, in ``Trace.tensors`` — for views such as an attention heatmap."""
    tracer = _Tracer(model, flops, keep)
    handles = []
    modules = list(model.modules())
    try:
        for m in modules:
            if isinstance(m, LoggingModule):
                m._tracer = tracer
            if isinstance(m, (nn.Identity, nn.ModuleList, nn.ModuleDict)):
                continue  # pass-throughs and containers: nothing to see
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
        with torch.no_grad():
            if tracer.flop_mode is not None:
                with tracer.flop_mode:
                    model(idx, **forward_kwargs)
            else:
                model(idx, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
        for m in modules:
            if isinstance(m, LoggingModule):
                m.__dict__.pop("_tracer", None)
    assert tracer.root is not None
    return Trace(tracer.root, tracer._flops_now(), str(idx.device), tracer.events, tracer.tensors)


# ---------------------------------------------------------------- FLOPs for CPU attention

_SDPA_REGISTERED = False


def register_cpu_sdpa_flops() -> None:
    """Teach FlopCounterMode the CPU fused attention kernels (torch counts only GPU ones).

    Like torch's own formulas this counts the full T x S score matrix (causality ignored),
    and handles GQA by counting the keys/values as broadcast to every query head.
    """
    global _SDPA_REGISTERED
    if _SDPA_REGISTERED:
        return
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)

    def as_heads(shape, h):
        return (shape[0], h, *shape[2:])

    if fwd is not None and fwd not in fc.flop_registry:
        @fc.register_flop_formula(fwd)
        def _fwd(q, k, v, *args, out_shape=None, **kwargs) -> int:
            h = q[1]
            return fc.sdpa_flop_count(q, as_heads(k, h), as_heads(v, h))

    if bwd is not None and bwd not in fc.flop_registry:
        @fc.register_flop_formula(bwd)
        def _bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
            h = q[1]
            return fc.sdpa_backward_flop_count(grad_out, q, as_heads(k, h), as_heads(v, h))

    _SDPA_REGISTERED = True


# ---------------------------------------------------------------- text rendering

def _fmt_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def _fmt_shape(rec: dict) -> str:
    return "(" + ", ".join(map(str, rec["shape"])) + ")" if "shape" in rec else rec.get("type", "?")


def _fmt_record(name: str, rec: dict, stats: bool = True) -> str:
    if "shape" not in rec:
        return f"{name}: {rec.get('type', '?')}"
    text = f"{name} {_fmt_shape(rec)} {rec['dtype']}"
    if stats and rec.get("mean") is not None:
        text += f"  mean {rec['mean']:.3g} std {rec['std']:.3g} [{rec['min']:.3g}, {rec['max']:.3g}]"
    if rec.get("nonfinite"):
        text += f"  !! {rec['nonfinite']} non-finite"
    return text


def render_text(trace: Trace | dict, depth: Optional[int] = None, show_logs: bool = True) -> str:
    """An indented tree of calls, at most ``depth`` levels below the root (None = all).

    Each call shows its input shapes, its outputs with value stats, and what it logged.
    """
    d = trace.to_dict() if isinstance(trace, Trace) else trace
    lines: list[str] = []

    def visit(c: dict, level: int, prefix: str, last: bool) -> None:
        branch = "" if level == 0 else ("└─ " if last else "├─ ")
        name = c["path"] or "(model)"
        flag = "  !! non-finite appears here" if c.get("nan_origin") else ""
        ins = ", ".join(f"{k} {_fmt_shape(r)}" for k, r in c["inputs"].items())
        lines.append(f"{prefix}{branch}{name} [{c['class']}]  in: {ins or '-'}"
                     f"  params {_fmt_count(c['params'])}  flops {_fmt_count(c['flops'])}{flag}")
        inner = prefix + ("" if level == 0 else ("   " if last else "│  "))
        kids = c["children"] if depth is None or level < depth else []
        bar = "│ " if kids else "  "
        for k, r in c["outputs"].items():
            lines.append(f"{inner}{bar}  -> {_fmt_record(k, r)}")
        if show_logs:
            for k, r in c["logs"].items():
                lines.append(f"{inner}{bar}   · {_fmt_record(k, r)}")
        for i, child in enumerate(kids):
            visit(child, level + 1, inner, i == len(kids) - 1)

    visit(d["root"], 0, "", True)
    lines.append(f"total FLOPs {_fmt_count(d['total_flops'])} ({d['total_flops']:,})")
    first = d.get("first_nonfinite")
    if first:
        lines.append(f"first non-finite value: {first['name']} at {first['path'] or '(model)'}")
    return "\n".join(lines)


__all__ = ["LoggingModule", "Call", "Trace", "trace_model", "tensor_record", "render_text",
           "register_cpu_sdpa_flops"]


# --- the trace verb --------------------------------------------------------------------------


def run_trace(ws, req, available=None) -> tuple[dict, dict]:
    """Carry out a ``TraceRequest``: build the model, load the checkpoint, encode the text, trace
    one forward. Returns (result, kept tensors); ``result`` is plain JSON — the request's source,
    the checkpoint, the model config, parameters, input shape, token ids and their labels, the
    estimated forward FLOPs and the trace. ``available(device)`` says the free memory (default:
    ``estimate.available_memory``). Bad input raises a ``WorkbenchError`` naming the field."""
    from .checkpoint import load_weights
    from .config import load_config
    from .errors import WorkbenchError
    from .estimate import TIGHT_FRACTION, available_memory, flops_per_token, fmt_bytes, param_count
    from .model import build_model
    from .runs import get_run, run_config
    from .tokenizer import Tokenizer, load_tokenizer
    from .trace_request import INIT

    run = None
    if req.run:
        run = get_run(ws, req.run)
        cfg = run_config(run)
    else:
        cfg = load_config(req.config, ws)
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
            checkpoint = load_weights(model, run.path, req.checkpoint)
    model.eval()
    idx = torch.tensor([ids] * req.batch, dtype=torch.long, device=device)
    trace = trace_model(model, idx, keep=tuple(req.keep))
    T = len(ids)
    result = {"source": req.source, "checkpoint": checkpoint, "model": mc.to_dict(), "params": n_params,
              "device": device, "input_shape": [req.batch, T], "text": req.text, "tokens": ids,
              "labels": labels, "random_ids": req.text is None,
              "estimated_flops": flops_per_token(mc, T)["forward"] * req.batch * T, **trace.to_dict()}
    return result, trace.tensors
