"""Config field machinery: every field's metadata, check, text parser and formatter.

Every field carries its help text and its range or choices in ``dataclasses.field`` metadata
(``_f``), so the app generates an editing form from a dataclass alone (``fields_of``), and YAML,
``--set`` and the form all parse and check a value the same way (``parse_field``,
``check_field``). ``_Validated`` runs those checks when a config is built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union, get_args, get_origin, get_type_hints

from workbench.errors import ConfigError


def _f(default: Any, help: str, *, min: float | None = None, max: float | None = None,
       choices: tuple | None = None, min_exclusive: bool = False, none_means: str | None = None,
       norm: Callable[[Any], Any] | None = None, rule: str | None = None):
    """A dataclass field with the metadata a form (and the validator) needs. ``norm`` is a field
    that reads its own values (a list of names, ...): it takes what YAML or the typed text gave
    and returns the value to keep, raising ValueError or TypeError for a bad one; ``rule`` says
    in words what it allows."""
    meta = {"help": help, "min": min, "max": max, "choices": choices,
            "min_exclusive": min_exclusive, "none_means": none_means, "norm": norm, "rule": rule}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldInfo:
    """What a form needs to show and check one config field."""

    name: str
    type: type            # int, float, bool or str (the inner type when optional)
    optional: bool        # None is allowed (its meaning is in ``none_means``)
    default: Any
    help: str
    choices: Optional[tuple]
    min: Optional[float]
    max: Optional[float]
    min_exclusive: bool = False
    none_means: Optional[str] = None
    norm: Optional[Callable[[Any], Any]] = None  # reads the field's own values (``_f``)
    rule: Optional[str] = None                   # what ``norm`` allows, in words

    def allowed(self) -> str:
        """The allowed values in words, for error messages and form hints."""
        if self.rule:
            text = self.rule
        elif self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type is bool:
            text = "true or false"
        else:
            kind = "an integer" if self.type is int else "a number"
            lo = "" if self.min is None else (f" > {self.min:g}" if self.min_exclusive else f" >= {self.min:g}")
            hi = "" if self.max is None else f" <= {self.max:g}"
            text = kind + (lo + (" and" if lo and hi else "") + hi if (lo or hi) else "")
        if self.optional:
            text += f", or null ({self.none_means or 'unset'})"
        return text


def fields_of(cls_or_obj) -> list[FieldInfo]:
    """Describe every field of a config dataclass (or instance), in declaration order."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("hidden"):
            continue  # kept by the class itself (a variant's options), not a form row
        tp, optional = hints[f.name], False
        if get_origin(tp) is Union:
            args = [a for a in get_args(tp) if a is not type(None)]
            optional, tp = True, args[0]
        m = f.metadata
        out.append(FieldInfo(f.name, tp, optional, f.default, m.get("help", ""), m.get("choices"),
                             m.get("min"), m.get("max"), m.get("min_exclusive", False),
                             m.get("none_means"), m.get("norm"), m.get("rule")))
    return out


def check_field(owner: str, info: FieldInfo, value: Any) -> Any:
    """Validate (and lightly normalise) one value; raise ConfigError naming field, value, rule.
    The one range and type check: construction, YAML, ``--set`` and the app's form all end here."""
    where, raw = f"{owner}.{info.name}", value  # report what the user wrote, not a coerced copy

    def bad():
        raise ConfigError(f"{where} = {raw!r} is not allowed: expected {info.allowed()}", (where,))

    if info.norm is not None:
        try:
            return info.norm(value)
        except (TypeError, ValueError):
            bad()
    if value is None:
        if info.optional:
            return None
        bad()
    if info.type is bool:
        if not isinstance(value, bool):
            bad()
        return value
    if info.type is str:
        if not isinstance(value, str) or (info.choices and value not in info.choices):
            bad()
        return value
    if isinstance(value, bool):  # bool is an int subclass; `dim: true` is a mistake
        bad()
    if info.type is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML writes 1e6 as a float; accept whole numbers
        if not isinstance(value, int):
            bad()
    elif info.type is float:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            bad()
        value = float(value)
    if info.min is not None and (value <= info.min if info.min_exclusive else value < info.min):
        bad()
    if info.max is not None and value > info.max:
        bad()
    return value


NULL_WORDS = ("", "null", "none")


def format_field(info: FieldInfo, value: Any) -> str:
    """How a value is written as text (a form's Input, ``workbench config show``); ``parse_field``
    reads it back."""
    if value is None:
        return ""
    if info.type is float:
        return repr(float(value))
    return str(value)


def parse_field(owner: str, info: FieldInfo, text: str) -> Any:
    """A field's value from text (a form's Input, ``--set section.field=TEXT``), checked by
    ``check_field``; a ConfigError names the field, the text and what is allowed."""
    raw = text.strip()

    def bad():
        where = f"{owner}.{info.name}"
        raise ConfigError(f"{where} = {raw!r} is not allowed: expected {info.allowed()}", (where,))

    if info.norm is not None:  # the field reads its own text
        return check_field(owner, info, raw)
    if raw.lower() in NULL_WORDS and raw not in (info.choices or ()):  # model.pos=none is NoPE, not null
        return check_field(owner, info, None) if info.optional else bad()
    value: Any = raw
    if info.type is bool:
        if raw.lower() not in ("true", "false"):
            bad()
        value = raw.lower() == "true"
    elif info.type in (int, float):
        try:
            value = int(raw.replace("_", "")) if info.type is int else float(raw)
        except ValueError:
            try:  # 1e6 for an int field is fine when it is whole (check_field decides)
                value = float(raw)
            except ValueError:
                bad()
        if isinstance(value, float) and not math.isfinite(value):
            bad()
    try:
        return check_field(owner, info, value)
    except ConfigError:
        bad()  # the message quotes the text as typed


class _Validated:
    """Mixin: field checks on construction, then the class's cross-field ``_check``."""

    def __post_init__(self):
        owner = _owner_name(type(self))
        for info in fields_of(self):
            object.__setattr__(self, info.name, check_field(owner, info, getattr(self, info.name)))
        self._check()

    def _check(self) -> None:
        pass

    @classmethod
    def _is_option(cls, key: str) -> bool:
        """Whether ``key`` may be a variant's own field (a class with options says; ``from_dict``
        passes such keys on to the constructor, which checks them)."""
        return False

    def to_dict(self) -> dict:
        return {info.name: getattr(self, info.name) for info in fields_of(self)}

    def replace(self, **changes):
        """A validated copy with some fields changed (configs are immutable)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Any):
        owner = _owner_name(cls)
        if not isinstance(d, dict):
            raise ConfigError(f"{owner} must be a mapping of field: value, got {type(d).__name__}")
        names = [f.name for f in fields_of(cls)]
        unknown = [k for k in d if k not in names and not cls._is_option(k)]
        if unknown:
            raise ConfigError(f"unknown {owner} key(s) {', '.join(map(repr, unknown))}; "
                              f"valid keys: {', '.join(names)}")
        options = {k: v for k, v in d.items() if k not in names}
        return cls(**{k: v for k, v in d.items() if k in names}, **({"options": options} if options else {}))


def _owner_name(cls) -> str:
    """The name messages give a config class: its YAML section (``_section``) or its class name."""
    return cls.__dict__.get("_section") or cls.__name__
