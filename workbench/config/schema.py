"""Model and training configs: the dataclasses, their presets and YAML io.

Each field's help, range or choices is metadata (``workbench.config.fields``), so forms, ``--set``
and YAML share one check. Derived values (head_dim, ffn hidden size, parameter count, FLOPs,
memory) are properties or live in ``config.sizes`` and ``machine.estimate``; they are never saved. This module does not import torch: the app
reads and validates configs long before it needs a model.

On disk a config is one YAML file::

    version: 1
    model: {dim: 64, n_layers: 5, ...}
    train: {batch_size: 16, ...}      # optional
    data: ...                         # opaque here; owned by the training loop
    tokenizer: ...                    # idem

``load_config(spec, workspace)`` takes a path or a preset name; names are looked up in the
workspace's ``models/`` first, then among the presets shipped inside the package.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from workbench.errors import ConfigError
from workbench.experiments.registry import (PARTS, Choices, chosen_options, option_owners, reserve_fields,
                                            section_parts)
from workbench.config.fields import _Validated, _f, check_field, fields_of

CONFIG_VERSION = 1
PRESETS_DIR = Path(__file__).parent / "presets"
# keys a run's config.yaml adds (when it was made, how it was resumed): read, then left aside, so
# a run's config.yaml also works as a config for a new run
RUN_ONLY_KEYS = ("created", "resumes", "plan", "experiments", "init_from", "imported_from")
TOP_LEVEL_KEYS = ("version", "name", "description", "model", "train", "data", "tokenizer", *RUN_ONLY_KEYS)

# The model's replaceable parts take their choices from the registry of variants (built-in and
# registered by experiment files); the rest are fixed lists.
SCHEDULE_CHOICES = ("cosine", "linear", "constant", "wsd")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
# the tools a run's metrics rows can also go to (``training.loggers``), each an optional extra
LOG_TO_CHOICES = ("tensorboard", "wandb", "trackio")


def _log_to(value: Any) -> str:
    """``train.log_to`` as kept: the tools' names in ``LOG_TO_CHOICES`` order, comma-separated,
    "" for none. Read from a YAML list or text with commas or spaces; null, "none" and "" are none."""
    if value is None:
        return ""
    if isinstance(value, str):
        names = [] if value.strip().lower() in ("none", "null") else value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise TypeError(value)
    names = [n.lower() for n in names]
    if any(n not in LOG_TO_CHOICES for n in names):
        raise ValueError(value)
    return ",".join(c for c in LOG_TO_CHOICES if c in names)


class _WithVariants(_Validated):
    """A config section whose fields choose variants (``registry.section_parts``) and which keeps
    the chosen variants' own fields, their options, in ``options``: checked by each option's
    rule, filled with its default when not given, read as attributes (``cfg.ve_layers``) and
    written flat beside the built-in fields. An option of a variant the section does not choose
    is refused, naming the variant; changing the choice (``replace``) drops the old one's."""

    options: tuple  # ((name, value), ...), sorted; a tuple keeps the config hashable

    def __post_init__(self):
        super().__post_init__()
        given = dict(self.options)
        wanted = chosen_options(self._section, {f: getattr(self, f) for f in section_parts(self._section)})
        for key in given:
            if key not in wanted:
                raise ConfigError(self._not_chosen(key), (f"{self._section}.{key}",))
        checked = {key: check_field(self._section, info, given.get(key, info.default))
                   for key, (_, info) in wanted.items()}
        object.__setattr__(self, "options", tuple(sorted(checked.items())))

    def _not_chosen(self, key: str) -> str:
        section = self._section
        owners = option_owners(section, key)
        if not owners:
            valid = [f.name for f in fields_of(self)] + [k for k, _ in self.options]
            return f"unknown {section} key {key!r}; valid keys: {', '.join(valid)}"
        v = owners[0]
        field_key = PARTS[v.part][0]
        now = getattr(self, field_key.split(".", 1)[1])
        return (f"{section}.{key} is an option of {v.part} {v.name!r}, which this config does not choose "
                f"({field_key} = {now!r}); set {field_key} = {v.name!r} to use it")

    def __getattr__(self, name: str):
        if not name.startswith("_"):
            for key, value in self.__dict__.get("options", ()):
                if key == name:
                    return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def infos(self) -> list:
        """Every field of this section as it stands: the built-in ones, then the chosen
        variants' options (``config show``, the form)."""
        chosen = chosen_options(self._section, {f: getattr(self, f) for f in section_parts(self._section)})
        return fields_of(self) + [info for _, info in chosen.values()]

    @classmethod
    def _is_option(cls, key: str) -> bool:
        return bool(option_owners(cls._section, key))

    def to_dict(self) -> dict:
        return {**super().to_dict(), **dict(self.options)}

    def replace(self, **changes):
        names = {f.name for f in fields_of(self)}
        given = {k: changes.pop(k) for k in list(changes) if k not in names}
        wanted = chosen_options(self._section, {f: changes.get(f, getattr(self, f))
                                                for f in section_parts(self._section)})
        kept = {k: v for k, v in self.options if k in wanted}
        return dataclasses.replace(self, **changes, options=tuple({**kept, **given}.items()))


def _options_field():
    return field(default=(), metadata={"hidden": True})


@dataclass(frozen=True)
class ModelConfig(_WithVariants):
    """The shape and variant choices of one GPT/Llama-family transformer."""

    _section = "model"

    vocab_size: int = _f(512, "number of token ids; must match the tokenizer", min=2, max=1_000_000)
    dim: int = _f(64, "width of the residual stream (embedding size)", min=1, max=65_536)
    n_layers: int = _f(4, "number of transformer blocks", min=1, max=1_000)
    n_heads: int = _f(4, "attention (query) heads; must divide dim", min=1, max=1_024)
    n_kv_heads: Optional[int] = _f(None, "key/value heads: = n_heads is MHA, 1 is MQA, between is "
                                   "GQA; must divide n_heads", min=1, max=1_024,
                                   none_means="same as n_heads")
    hidden_dim: Optional[int] = _f(None, "MLP hidden size; automatic: 4*dim for gelu and relu2, 2/3 of "
                                         "that rounded up to multiple_of for swiglu (llama rule)",
                                   min=1, max=1_000_000, none_means="automatic from dim and mlp")
    multiple_of: int = _f(32, "round an automatic swiglu hidden size up to a multiple of this",
                          min=1, max=4_096)
    mlp: str = _f("swiglu", "MLP type: swiglu (llama), gelu (GPT-2) or relu2 (squared ReLU)",
                  choices=Choices("mlp"))
    norm: str = _f("rmsnorm", "normalisation: rmsnorm (llama) or layernorm (GPT-2)",
                   choices=Choices("norm"))
    norm_eps: float = _f(1e-5, "epsilon added inside the norm", min=0.0, max=1.0, min_exclusive=True)
    pos: str = _f("rope", "positions: rope (rotary), learned (absolute table) or none (NoPE)",
                  choices=Choices("pos"))
    rope_theta: float = _f(10000.0, "RoPE base frequency (used only with pos: rope)", min=1.0,
                           max=1e9)
    max_seq_len: int = _f(256, "longest context in tokens (training window, KV cache size)",
                          min=1, max=1_048_576)
    dropout: float = _f(0.0, "dropout probability during training (0 for small data is fine)",
                        min=0.0, max=0.9)
    bias: bool = _f(False, "add bias terms to linear layers and LayerNorm")
    tie_embeddings: bool = _f(True, "share the token embedding with the output layer")
    qk_norm: bool = _f(False, "RMS-normalise each head's queries and keys before RoPE (QK-norm)")
    logit_softcap: Optional[float] = _f(None, "cap the output logits softly at +-c with c*tanh(x/c)",
                                        min=1.0, max=1e4, none_means="no cap")
    attention: str = _f("causal", "attention: causal (MHA/GQA/MQA by n_kv_heads), or an experiment's",
                        choices=Choices("attention"))
    block: str = _f("prenorm", "block: prenorm (x + f(norm(x)), llama and GPT-2), postnorm (norm(x + f(x)), "
                               "the original Transformer's), or an experiment's",
                    choices=Choices("block"))
    arch: str = _f("transformer", "the whole model: transformer (embeddings, blocks, norm, head), "
                                  "value_embed (the same plus value embeddings, field ve_layers), or an "
                                  "experiment's", choices=Choices("model"))
    options: tuple = _options_field()

    def _check(self) -> None:
        if self.dim % self.n_heads:
            raise ConfigError(f"model.n_heads = {self.n_heads} is not allowed: it must divide "
                              f"model.dim = {self.dim} (head_dim = dim / n_heads)", ("model.n_heads", "model.dim"))
        if self.n_heads % self.kv_heads:
            raise ConfigError(f"model.n_kv_heads = {self.n_kv_heads} is not allowed: it must "
                              f"divide model.n_heads = {self.n_heads}", ("model.n_kv_heads", "model.n_heads"))
        if self.pos == "rope" and self.head_dim % 2:
            raise ConfigError(f"model.pos = 'rope' is not allowed with an odd head_dim "
                              f"({self.head_dim} = dim {self.dim} / n_heads {self.n_heads}); "
                              "choose dim and n_heads so head_dim is even, or another pos",
                              ("model.pos", "model.dim", "model.n_heads"))

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        if self.mlp in ("gelu", "relu2"):
            return 4 * self.dim
        h = int(2 * 4 * self.dim / 3)
        return self.multiple_of * ((h + self.multiple_of - 1) // self.multiple_of)

    @property
    def n_params(self) -> int:
        from workbench.config.sizes import param_count

        return param_count(self)


@dataclass(frozen=True)
class TrainConfig(_WithVariants):
    """How to train: optimiser, schedule, budget, evaluation and checkpoint cadence, device.

    Defaults suit a laptop CPU with two cores and a debug-sized model.
    """

    _section = "train"

    batch_size: int = _f(16, "sequences per micro-batch", min=1, max=65_536)
    grad_accum: int = _f(1, "micro-batches per optimiser step", min=1, max=4_096)
    lr: float = _f(1e-3, "peak learning rate (AdamW)", min=0.0, max=1.0, min_exclusive=True)
    min_lr: float = _f(1e-4, "learning rate at the end of the schedule", min=0.0, max=1.0)
    warmup_steps: int = _f(50, "linear warm-up steps from 0 to lr", min=0, max=10_000_000)
    schedule: str = _f("cosine", "decay after warm-up: cosine, linear, constant, or wsd (constant, then "
                                 "linear to min_lr over the last decay_fraction of the budget)",
                       choices=SCHEDULE_CHOICES)
    decay_fraction: float = _f(0.2, "wsd: the last fraction of the budget (steps, tokens or time) "
                                    "that decays to min_lr", min=0.0, max=1.0, min_exclusive=True)
    optimizer: str = _f("adamw", "adamw, or muon for the 2-D hidden matrices (AdamW keeps embeddings, "
                                 "head, norms and biases), or an experiment's", choices=Choices("optimizer"))
    weight_decay: float = _f(0.1, "AdamW weight decay (not applied to norms and biases)",
                             min=0.0, max=10.0)
    beta1: float = _f(0.9, "AdamW beta1", min=0.0, max=1.0, min_exclusive=False)
    beta2: float = _f(0.95, "AdamW beta2", min=0.0, max=1.0)
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)", min=0.0, max=1e6)
    max_steps: Optional[int] = _f(1000, "budget: optimiser steps", min=1, max=10**12,
                                  none_means="no step limit")
    max_tokens: Optional[int] = _f(None, "budget: training tokens seen", min=1, max=10**15,
                                   none_means="no token limit")
    max_minutes: Optional[float] = _f(None, "budget: wall-clock minutes", min=0.0, max=10**7,
                                      min_exclusive=True, none_means="no time limit")
    eval_interval: int = _f(100, "steps between validation evaluations", min=1, max=10**9)
    eval_batches: int = _f(20, "batches per validation evaluation (a fixed held-out set)",
                           min=1, max=100_000)
    log_interval: int = _f(10, "steps between metric records", min=1, max=10**9)
    health_interval: int = _f(50, "steps between model-health records (per layer: gradient norm, update/weight, "
                                  "activation RMS, attention entropy; health.jsonl); 0 = off", min=0, max=10**9)
    checkpoint_interval: int = _f(200, "steps between checkpoints", min=1, max=10**9)
    keep_last: int = _f(3, "checkpoints kept on disk (older ones are deleted)", min=1, max=1_000)
    device: str = _f("auto", "where to train: auto picks cuda, then mps, then cpu",
                     choices=DEVICE_CHOICES)
    precision: str = _f("auto", "number format: auto is bf16 on a cpu where bf16 measured faster, "
                                "else fp32; bf16 (or fp16) on cuda; fp32 on mps",
                        choices=PRECISION_CHOICES)
    compile: bool = _f(False, "torch.compile the model (slow start, faster steps on GPU)")
    num_threads: int = _f(0, "CPU threads for torch (0 = torch's default)", min=0, max=1_024)
    seed: int = _f(1337, "random seed for init, batches and dropout", min=0, max=2**63 - 1)
    log_to: str = _f("", "also send every metrics row to these tools (each an optional extra; "
                         "metrics.jsonl stays the record): tensorboard, wandb, trackio",
                     norm=_log_to, rule="names from " + ", ".join(LOG_TO_CHOICES) + " separated by commas "
                                        "(or a YAML list), or empty for none", none_means="none")
    options: tuple = _options_field()

    def _check(self) -> None:
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr = {self.min_lr!r} is not allowed: it must be "
                              f"<= train.lr = {self.lr!r}", ("train.min_lr", "train.lr"))
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            raise ConfigError("train.max_steps, train.max_tokens and train.max_minutes are all "
                              "null: set at least one budget", ("train.max_steps", "train.max_tokens", "train.max_minutes"))


reserve_fields("model", (f.name for f in dataclasses.fields(ModelConfig)))  # an option cannot take them
reserve_fields("train", (f.name for f in dataclasses.fields(TrainConfig)))


@dataclass
class Config:
    """One config file: the model, how to train it, and opaque data/tokenizer sections."""

    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    data: Any = None
    tokenizer: Any = None
    name: Optional[str] = None
    description: Optional[str] = None
    source: Optional[Path] = None  # where it was read from; not saved

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"version": CONFIG_VERSION}
        if self.name is not None:
            d["name"] = self.name
        if self.description is not None:
            d["description"] = self.description
        d["model"] = self.model.to_dict()
        d["train"] = self.train.to_dict()
        if self.data is not None:
            d["data"] = self.data
        if self.tokenizer is not None:
            d["tokenizer"] = self.tokenizer
        return d


def config_from_dict(d: Any, source: Optional[Path] = None) -> Config:
    where = f" in {source}" if source else ""
    if not isinstance(d, dict):
        raise ConfigError(f"a config file must be a YAML mapping{where}")
    unknown = [k for k in d if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(map(repr, unknown))}{where}; "
                          f"valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    version = d.get("version")
    if version is None:
        raise ConfigError(f"missing 'version'{where}: add `version: {CONFIG_VERSION}` at the top")
    if version != CONFIG_VERSION:
        raise ConfigError(f"version = {version!r}{where} is not supported: this workbench reads "
                          f"version {CONFIG_VERSION}")
    if "model" not in d:
        raise ConfigError(f"missing 'model' section{where}")
    try:
        model = ModelConfig.from_dict(d["model"])
        train = TrainConfig.from_dict(d["train"]) if d.get("train") is not None else TrainConfig()
    except ConfigError as e:
        raise ConfigError(f"{e}{where}", e.fields) from None
    except TypeError as e:  # e.g. a required field missing in a hand-made class; keep it plain
        raise ConfigError(f"{e}{where}") from None
    return Config(model, train, d.get("data"), d.get("tokenizer"), d.get("name"),
                  d.get("description"), source)


def read_config(path: str | os.PathLike) -> Config:
    import yaml

    path = Path(path)
    from workbench.fileio import read_text

    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return config_from_dict(d, path)


def save_config(path: str | os.PathLike, config: Config) -> Path:
    """Write atomically, so a crash never leaves half a config."""
    from workbench.fileio import write_yaml

    write_yaml(path, config.to_dict())
    return Path(path)


def preset_names(workspace=None) -> list[str]:
    """Names usable with ``load_config``: the workspace's models/ then the packaged presets."""
    names: list[str] = []
    dirs = ([workspace.models_dir()] if workspace is not None else []) + [PRESETS_DIR]
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                if p.stem not in names:
                    names.append(p.stem)
    return names


def resolve_config_path(spec: str, workspace=None) -> Path:
    p = Path(spec).expanduser()
    looks_like_path = p.suffix in (".yaml", ".yml") or os.sep in spec or "/" in spec
    if looks_like_path or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file {spec!r} does not exist")
        return p
    if workspace is not None:
        for ext in (".yaml", ".yml"):
            cand = workspace.models_dir() / f"{spec}{ext}"
            if cand.is_file():
                return cand
    cand = PRESETS_DIR / f"{spec}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError(f"no config or preset named {spec!r}; available: "
                      f"{', '.join(preset_names(workspace)) or '(none)'}, or give a .yaml path")


def load_config(spec: str | os.PathLike, workspace=None) -> Config:
    """Read a config from a YAML path or a preset name (workspace models/ first, then packaged)."""
    return read_config(resolve_config_path(str(spec), workspace))
