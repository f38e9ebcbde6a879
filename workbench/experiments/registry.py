"""The registry of variants: for each replaceable part of the model, the names a config may
choose and the class each name builds.

Built-in parts are listed here by the dotted path of their class, so the names are known
without importing torch (configs are checked while the user types); a user's experiment file
registers its own class with ``@register(part, name)``. Config fields take their choices from
here (``Choices``), the model builds each part through ``build``, and ``workbench experiment
list`` shows them all.

A part's class is called as the built-in one is (see ``PARTS``), and should derive from
``workbench.model.base.LoggingModule`` (or the built-in class it changes), so that
``self.log(name, tensor)`` shows its intermediates in a trace.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

# part -> (the config field that names it, how the model calls a variant's class)
PARTS = {
    "norm": ("model.norm", "cls(dim, eps, bias): x (B, T, C) -> (B, T, C)"),
    "pos": ("model.pos", "cls(cfg): forward(x, start) -> x, rotary(start, T) -> Rotary | None"),
    "attention": ("model.attention", "cls(cfg, layer_idx): forward(x, rope, mask, kv_cache) -> (B, T, C)"),
    "mlp": ("model.mlp", "cls(cfg): x (B, T, C) -> (B, T, C)"),
    "block": ("model.block", "cls(cfg, layer_idx): forward(x, rope, mask, kv_cache) -> (B, T, C)"),
}


@dataclass
class Variant:
    part: str
    name: str
    target: Any               # the class, or "module:attr" for a built-in not imported yet
    description: str = ""
    source: str | None = None  # the file that registered it (None: built in)

    @property
    def builtin(self) -> bool:
        return self.source is None

    def resolve(self):
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


_BUILTIN = {
    "norm": {"rmsnorm": ("workbench.model.norms:RMSNorm", "RMSNorm (llama)"),
             "layernorm": ("workbench.model.norms:LayerNorm", "LayerNorm (GPT-2)")},
    "pos": {"rope": ("workbench.model.positions:RotaryPositions", "rotary positions on q and k"),
            "learned": ("workbench.model.positions:LearnedPositions", "a learned table added to the embeddings"),
            "none": ("workbench.model.positions:NoPositions", "NoPE: the causal mask alone")},
    "attention": {"causal": ("workbench.model.attention:Attention", "causal self-attention, MHA/GQA/MQA")},
    "mlp": {"swiglu": ("workbench.model.mlp:SwiGLU", "SwiGLU (llama)"),
            "gelu": ("workbench.model.mlp:GeluMLP", "GELU (GPT-2)"),
            "relu2": ("workbench.model.mlp:ReluSquared", "squared ReLU (Primer)")},
    "block": {"prenorm": ("workbench.model.block:Block", "x + attn(norm(x)), then x + mlp(norm(x))")},
}
_VARIANTS: dict[str, dict[str, Variant]] = {
    part: {name: Variant(part, name, target, desc) for name, (target, desc) in names.items()}
    for part, names in _BUILTIN.items()}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"part {part!r} is not one of {', '.join(PARTS)}")


def register(part: str, name: str, description: str = "") -> Callable:
    """Class decorator: make ``cls`` the variant ``name`` of ``part`` (a config then chooses it
    with ``model.PART: name``). Names are lower-case words; a built-in name cannot be taken."""
    _check_part(part)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"variant name {name!r} must be letters, digits, '-' or '_'")
    known = _VARIANTS[part].get(name)
    if known is not None and known.builtin:
        raise ValueError(f"{part} {name!r} is built in; register your variant under another name")

    def deco(cls):
        import inspect

        try:
            source = inspect.getsourcefile(cls) or "<unknown>"
        except TypeError:
            source = "<unknown>"
        doc = description or (cls.__doc__ or "").strip().split("\n")[0]
        _VARIANTS[part][name] = Variant(part, name, cls, doc, source)
        return cls

    return deco


def unregister_source(source: str) -> list[tuple[str, str]]:
    """Forget every variant ``source`` registered (before it is imported again); returns them."""
    gone = []
    for part, names in _VARIANTS.items():
        for name in [n for n, v in names.items() if v.source == source]:
            del names[name]
            gone.append((part, name))
    return gone


def saved() -> dict:
    """Every registration as it stands, to put back with ``restore`` (tests, a reload that fails)."""
    return {part: dict(names) for part, names in _VARIANTS.items()}


def restore(state: dict) -> None:
    for part, names in state.items():
        _VARIANTS[part].clear()
        _VARIANTS[part].update(names)


def names(part: str) -> tuple[str, ...]:
    _check_part(part)
    return tuple(_VARIANTS[part])


def variants(part: str | None = None) -> list[Variant]:
    parts = [part] if part else list(PARTS)
    return [v for p in parts for v in _VARIANTS[p].values()]


def get(part: str, name: str) -> Variant:
    _check_part(part)
    try:
        return _VARIANTS[part][name]
    except KeyError:
        raise KeyError(f"{part} {name!r} is not registered; registered: {', '.join(_VARIANTS[part])}") from None


def build(part: str, name: str):
    """The class of variant ``name`` of ``part`` (imported now if it is a built-in)."""
    return get(part, name).resolve()


class Choices:
    """A config field's choices, read from the registry each time (a variant registered later,
    by an experiment file, is a valid choice from then on). Behaves as a tuple of names."""

    def __init__(self, part: str):
        _check_part(part)
        self.part = part

    def __iter__(self) -> Iterator[str]:
        return iter(names(self.part))

    def __contains__(self, value) -> bool:
        return value in _VARIANTS[self.part]

    def __len__(self) -> int:
        return len(_VARIANTS[self.part])

    def __getitem__(self, i):
        return names(self.part)[i]

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, Choices)) else NotImplemented

    def __hash__(self) -> int:
        return hash(("Choices", self.part))

    def __repr__(self) -> str:
        return repr(names(self.part))
