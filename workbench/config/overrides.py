"""Changing a config: ``--set`` and sweep overrides, the minutes budget, the vocab a tokenizer
sets, and the diff against a base config. Every value goes through its field's own parser.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from workbench.errors import ConfigError
from workbench.config.fields import FieldInfo, fields_of, parse_field
from workbench.config.schema import Config, ModelConfig, TrainConfig
from workbench.experiments.registry import PARTS, option_owners, variants


# --- overrides, the vocab a tokenizer dictates, and diffs ------------------------------------

SECTIONS = ("model", "train")


def section_class(section: str):
    return {"model": ModelConfig, "train": TrainConfig}[section]


def field_info(key: str, where: str = "") -> tuple[str, FieldInfo]:
    """``"train.lr"`` -> ("train", its FieldInfo); a ConfigError names a bad section or field
    and the valid ones (``where`` says where the key was written, e.g. "--set 'x=1'")."""
    section, dot, name = key.strip().partition(".")
    at = f"{where}: " if where else ""
    if not dot or not name:
        raise ConfigError(f"{at}{key.strip()!r} is not SECTION.FIELD (e.g. train.max_steps)")
    if section not in SECTIONS:
        raise ConfigError(f"{at}unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
    infos = {f.name: f for f in fields_of(section_class(section))}
    if name in infos:
        return section, infos[name]
    owners = option_owners(section, name)  # a variant's own field (checked against the choice later)
    if owners:
        return section, owners[0].options[name]
    options = sorted({k for v in variants() for k in v.options if PARTS[v.part][0].startswith(section + ".")})
    raise ConfigError(f"{at}unknown {section} field {name!r}; valid fields: {', '.join(infos)}"
                      + (f"; options of registered variants: {', '.join(options)}" if options else ""))


# A time budget in minutes (``--minutes``, the planner, the Config pane's box): what
# ``train.max_minutes`` allows, bar null.
MINUTES_INFO = dataclasses.replace(next(f for f in fields_of(TrainConfig) if f.name == "max_minutes"), optional=False)
MINUTES_ALLOWED = f"expected {MINUTES_INFO.allowed()}"


def check_minutes(minutes: Any, text: str | None = None) -> float:
    """``minutes`` as a budget, or a ConfigError quoting ``text`` (what was typed) or the value."""
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) \
            or not 0 < minutes <= MINUTES_INFO.max:
        shown = text if text is not None else minutes
        raise ConfigError(f"minutes = {shown!r} is not allowed: {MINUTES_ALLOWED}", ("train.max_minutes",))
    return float(minutes)


def parse_minutes(text: str) -> float:
    """A budget typed into a form, checked as ``check_minutes``."""
    try:
        minutes = float(text)
    except ValueError:
        minutes = None
    return check_minutes(minutes, text)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["train.lr=3e-3", "model.dim=128"]`` -> {"model": {...}, "train": {...}}, each value
    parsed and checked as its field's type (``parse_field``): a bad one is named with what is allowed."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set {item!r} is not SECTION.FIELD=VALUE (e.g. train.max_steps=500)")
        section, info = field_info(key, f"--set {item!r}")
        out[section][info.name] = parse_field(section, info, raw)
    return out


def sections_of(dotted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"model.dim": 128, "train.lr": 2e-3}`` (a sweep's overrides) -> by section, each key
    checked; the values are checked when the config is built."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in dotted.items():
        section, info = field_info(str(key))
        out[section][info.name] = value
    return out


def apply_overrides(cfg: Config, sets: dict[str, dict[str, Any]], minutes: float | None = None) -> Config:
    """A copy of ``cfg`` with the overridden fields (cross-field rules checked again). ``minutes``
    is the budget shorthand (`--minutes`): that time budget alone, unless a train field says otherwise."""
    wanted = dict(sets.get("train") or {})
    if minutes is not None:
        wanted = {"max_minutes": float(minutes), "max_steps": None, "max_tokens": None, **wanted}
    model = cfg.model.replace(**sets["model"]) if sets.get("model") else cfg.model
    train = cfg.train.replace(**wanted) if wanted else cfg.train
    return dataclasses.replace(cfg, model=model, train=train)


def train_changes(cfg: Config, wanted: dict[str, Any]) -> tuple[Config, dict[str, list]]:
    """A resume's new train settings: the config with them (checked whole: a budget must remain,
    min_lr <= lr ...) and each train field that changed as ``[old, new]`` (what ``resumes`` records)."""
    before = cfg.train.to_dict()
    train = cfg.train.replace(**wanted) if wanted else cfg.train
    changes = {k: [before[k], v] for k, v in train.to_dict().items() if before[k] != v}
    return dataclasses.replace(cfg, train=train), changes


def fit_vocab(cfg: Config, tokenizer: str, vocab_size: int, pinned: bool = False) -> tuple[Config, str | None]:
    """The config with ``model.vocab_size`` set to the tokenizer's, and the notice saying so (None
    when it already matched). ``pinned``: the user set vocab_size explicitly, so a mismatch is
    an error instead of a change."""
    have = cfg.model.vocab_size
    if have == vocab_size:
        return cfg, None
    if pinned:
        raise ConfigError(f"model.vocab_size = {have} does not match tokenizer {tokenizer!r}, which has "
                          f"{vocab_size} pieces: leave vocab_size to the tokenizer or pick another tokenizer",
                          ("model.vocab_size",))
    cfg = dataclasses.replace(cfg, model=cfg.model.replace(vocab_size=vocab_size))
    return cfg, vocab_notice(have, vocab_size, tokenizer)


def vocab_notice(old, new: int, tokenizer: str) -> str:
    """The one line that says a tokenizer set the vocab (the CLI, the Train and Config panes)."""
    return f"model.vocab_size {old} → {new} from tokenizer {tokenizer}"


def config_diff(base: Config | None, current: dict[str, dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(section.field, old, new) for every value of ``current`` (by section) that differs from ``base``."""
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
