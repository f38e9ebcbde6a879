"""Text <-> config values for the generated form, and the diff against a loaded config.

No Textual here: the rules are plain functions the panes (and tests) call.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import Config, FieldInfo
from ..errors import ConfigError

NULL_WORDS = ("", "null", "none")


def format_value(info: FieldInfo, value: Any) -> str:
    """How a value is written in an Input (and parsed back by ``parse_value``)."""
    if value is None:
        return ""
    if info.type is float:
        return repr(float(value))
    return str(value)


def parse_value(owner: str, info: FieldInfo, text: str) -> Any:
    """Parse and check one field's text; raise ConfigError naming field, value and the rule."""
    raw = text.strip()

    def bad():
        raise ConfigError(f"{owner}.{info.name} = {raw!r} is not allowed: expected {info.allowed()}")

    if raw.lower() in NULL_WORDS:
        if info.optional:
            return None
        bad()
    if info.type is bool:
        if raw.lower() not in ("true", "false"):
            bad()
        return raw.lower() == "true"
    if info.type is str:
        if info.choices and raw not in info.choices:
            bad()
        return raw
    try:
        if info.type is int:
            value: Any = int(raw.replace("_", ""))
        else:
            value = float(raw)
    except ValueError:
        try:  # 1e6 for an int field is fine when it is whole
            f = float(raw)
        except ValueError:
            bad()
        if info.type is not int or not math.isfinite(f) or not f.is_integer():
            bad()
        value = int(f)
    if info.type is float and not math.isfinite(value):
        bad()
    if info.min is not None and (value <= info.min if info.min_exclusive else value < info.min):
        bad()
    if info.max is not None and value > info.max:
        bad()
    return value


def config_diff(base: Config | None, current: dict[str, dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(section.field, old, new) for every form value that differs from ``base``."""
    if base is None:
        return []
    out = []
    for section, values in current.items():
        old_section = getattr(base, section).to_dict()
        for name, new in values.items():
            old = old_section.get(name)
            if old != new:
                out.append((f"{section}.{name}", old, new))
    return out
