"""The registry of variants: for each replaceable part of the model, the names a config may
choose and the class each name builds.

Built-in parts are listed here by the dotted path of their class, so the names are known
without importing torch (configs are checked while the user types); a user's experiment file
registers its own class (or, for the optimizer, function) with ``@register(part, name)``. A
variant may declare its own config fields (``options={"name": option(default, help, ...)}``):
they belong to the section of the part's field (``model.`` or ``train.``), are accepted by YAML,
``--set``, sweeps and the Config pane's form while that variant is chosen, and the variant reads
them as attributes of the config it is given (``cfg.ve_layers``). Config fields take their
choices from here (``Choices``), the model builds each part through ``build``, and ``workbench
experiment list`` shows them all.

A part's class is called as the built-in one is (see ``PARTS``), and should derive from
``workbench.model.base.LoggingModule`` (or the built-in class it changes), so that
``self.log(name, tensor)`` shows its intermediates in a trace.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from workbench.config.fields import FieldInfo, check_field

# part -> (the config field that names it, how the model calls a variant's class)
PARTS = {
    "model": ("model.arch", "cls(cfg): forward(idx, kv_cache, logits_to_keep, targets) -> logits or loss "
                            "(subclass workbench.model.Transformer)"),
    "norm": ("model.norm", "cls(dim, eps, bias): x (B, T, C) -> (B, T, C)"),
    "pos": ("model.pos", "cls(cfg): forward(x, start) -> x, rotary(start, T) -> Rotary | None"),
    "attention": ("model.attention", "cls(cfg, layer_idx): forward(x, rope, mask, kv_cache) -> (B, T, C)"),
    "mlp": ("model.mlp", "cls(cfg): x (B, T, C) -> (B, T, C)"),
    "block": ("model.block", "cls(cfg, layer_idx): forward(x, rope, mask, kv_cache) -> (B, T, C)"),
    "optimizer": ("train.optimizer", "fn(model, tc, device) -> a torch.optim.Optimizer (tc: the train config)"),
}


def section_parts(section: str) -> dict[str, str]:
    """The config fields of ``section`` ("model" or "train") that name a part: field -> part."""
    out = {}
    for part, (key, _) in PARTS.items():
        s, _, name = key.partition(".")
        if s == section:
            out[name] = part
    return out


@dataclass
class Variant:
    part: str
    name: str
    target: Any               # the class, or "module:attr" for a built-in not imported yet
    description: str = ""
    source: str | None = None  # the file that registered it (None: built in)
    options: dict = field(default_factory=dict)  # its own config fields: name -> FieldInfo

    @property
    def builtin(self) -> bool:
        return self.source is None

    def resolve(self):
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


_TYPES = (bool, int, float, str)


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: tuple | None = None, type: type | None = None, none_means: str | None = None) -> FieldInfo:
    """A config field of a variant, checked like the built-in ones: its type is ``type`` or that of
    ``default`` (bool, int, float or str); ``none_means`` allows null and says what it means."""
    tp = type or (None if default is None else builtins.type(default))
    if tp not in _TYPES:
        raise ValueError(f"option type must be one of bool, int, float, str (default {default!r})")
    if default is None and none_means is None:
        raise ValueError("an option whose default is None needs none_means (what null means)")
    return FieldInfo("", tp, none_means is not None, default, help, tuple(choices) if choices else None,
                     min, max, False, none_means)


_BUILTIN = {
    "model": {"transformer": ("workbench.model.transformer:Transformer",
                              "embeddings, blocks, a final norm and the output head (GPT/Llama)"),
              "value_embed": ("workbench.model.value_embed:ValueEmbedTransformer",
                              "value embeddings mixed into the attention values (modded-nanogpt)",
                              {"ve_layers": option(2, "value-embedding tables: each feeds one of the first "
                                                      "and one of the last layers", min=1, max=1_000)})},
    "norm": {"rmsnorm": ("workbench.model.norms:RMSNorm", "RMSNorm (llama)"),
             "layernorm": ("workbench.model.norms:LayerNorm", "LayerNorm (GPT-2)")},
    "pos": {"rope": ("workbench.model.positions:RotaryPositions", "rotary positions on q and k"),
            "learned": ("workbench.model.positions:LearnedPositions", "a learned table added to the embeddings"),
            "none": ("workbench.model.positions:NoPositions", "NoPE: the causal mask alone")},
    "attention": {"causal": ("workbench.model.attention:Attention", "causal self-attention, MHA/GQA/MQA")},
    "mlp": {"swiglu": ("workbench.model.mlp:SwiGLU", "SwiGLU (llama)"),
            "gelu": ("workbench.model.mlp:GeluMLP", "GELU (GPT-2)"),
            "relu2": ("workbench.model.mlp:ReluSquared", "squared ReLU (Primer)")},
    "block": {"prenorm": ("workbench.model.block:Block", "x + attn(norm(x)), then x + mlp(norm(x))"),
              "postnorm": ("workbench.model.block:PostNormBlock",
                           "norm(x + attn(x)), then norm(x + mlp(x)) (post-LN, minGrok)")},
    "optimizer": {"adamw": ("workbench.training.optim:adamw", "AdamW on every parameter"),
                  "muon": ("workbench.training.optim:muon",
                           "Muon on the 2-D hidden matrices, AdamW on the rest")},
}
_VARIANTS: dict[str, dict[str, Variant]] = {
    part: {name: Variant(part, name, target, desc, None, {k: dataclasses.replace(o, name=k)
                                                          for k, o in (opts[0] if opts else {}).items()})
           for name, (target, desc, *opts) in names.items()}
    for part, names in _BUILTIN.items()}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"part {part!r} is not one of {', '.join(PARTS)}")


def _check_options(part: str, name: str, options: dict | None) -> dict[str, FieldInfo]:
    """``options`` checked (names, rules, defaults, no clash) and named."""
    section = PARTS[part][0].split(".", 1)[0]
    out = {}
    for key, info in (options or {}).items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise ValueError(f"{part} {name!r}: option name {key!r} must be a Python identifier not starting with '_'")
        if not isinstance(info, FieldInfo):
            raise ValueError(f"{part} {name!r}: option {key!r} must be made with option(default, help, ...)")
        if key in _section_fields(section):
            raise ValueError(f"{part} {name!r}: option {key!r} is already a {section} field; choose another name")
        info = dataclasses.replace(info, name=key)
        try:
            check_field(section, info, info.default)
        except Exception as e:
            raise ValueError(f"{part} {name!r}: option {key!r}: its default does not pass its own rule: {e}") from None
        for other in option_owners(section, key):
            if (other.part, other.name) != (part, name) and other.options[key] != info:
                raise ValueError(f"{part} {name!r}: option {key!r} is declared differently by {other.part} "
                                 f"{other.name!r} ({other.source}); give yours another name")
        out[key] = info
    return out


# the built-in field names of each config section, which an option cannot take: the config
# classes say them when they are defined (``reserve_fields``), so this module imports no config
_FIELDS: dict[str, set[str]] = {"model": set(), "train": set()}


def reserve_fields(section: str, names) -> None:
    _FIELDS[section] |= set(names)


def _section_fields(section: str) -> set[str]:
    return _FIELDS[section]


def register(part: str, name: str, description: str = "", options: dict | None = None) -> Callable:
    """Decorator: make a class (a function for ``optimizer``) the variant ``name`` of ``part``; a
    config then chooses it with ``PART's field: name`` (``model.mlp: mine``). Names are letters,
    digits, '-' or '_'; a built-in name cannot be taken. ``options``: the variant's own config
    fields, name -> ``option(default, help, min=, max=, choices=)``."""
    _check_part(part)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"variant name {name!r} must be letters, digits, '-' or '_'")
    known = _VARIANTS[part].get(name)
    if known is not None and known.builtin:
        raise ValueError(f"{part} {name!r} is built in; register your variant under another name")
    checked = _check_options(part, name, options)

    def deco(cls):
        import inspect

        try:
            source = inspect.getsourcefile(cls) or "<unknown>"
        except TypeError:
            source = "<unknown>"
        doc = description or (cls.__doc__ or "").strip().split("\n")[0]
        _VARIANTS[part][name] = Variant(part, name, cls, doc, source, checked)
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


def chosen_options(section: str, values: dict) -> dict[str, tuple[Variant, FieldInfo]]:
    """The options of the variants ``values`` (field -> value of ``section``) choose."""
    out = {}
    for fname, part in section_parts(section).items():
        v = _VARIANTS[part].get(values.get(fname))
        for key, info in (v.options if v else {}).items():
            out[key] = (v, info)
    return out


def option_owners(section: str, key: str) -> list[Variant]:
    """Every registered variant with an option ``key`` in ``section``."""
    return [v for v in variants() if key in v.options and PARTS[v.part][0].startswith(section + ".")]


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
