"""Shape tracing: a record of every module call and named intermediate in one forward pass.

Model modules derive from ``workbench.model.base.LoggingModule``. Inside a module,
``self.log(name, tensor)`` records a named intermediate (attention's q, k, v, scores, probs).
Tracing is switched on per model by setting ``_tracer`` on its modules for one forward, so it
costs nothing when off and never leaks into another model (or thread).

``trace_model(model, idx)`` runs one forward under forward hooks and ``FlopCounterMode`` and
returns a ``Trace``: a tree of ``Call`` nodes (path, class, named inputs/outputs, parameters,
FLOPs, logged intermediates), each tensor summarised by shape, dtype, device, min/max/mean/std
and its count of non-finite values. ``Trace.to_dict()`` is plain JSON; ``tracing.render`` prints it.
On the ``meta`` device (configs too large for RAM) records carry shapes only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from torch import nn
from workbench.model.base import LoggingModule


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


