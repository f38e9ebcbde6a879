"""Config dataclasses: form metadata, validation messages, YAML io, preset lookup, estimates."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from workbench.config.schema import (CONFIG_VERSION, Config, ModelConfig, TrainConfig, config_from_dict, load_config, preset_names, read_config, save_config)
from workbench.config.fields import fields_of
from workbench.errors import ConfigError
from workbench.machine.estimate import kv_cache_bytes, training_memory, verdict
from workbench.config.sizes import param_breakdown, param_count
from workbench.workspace import Workspace

PRESETS = ["debug", "tiny-1m", "stories260K", "stories15M", "gpt2-style", "cpu-10min", "cpu-30min"]


# ---------------------------------------------------------------- form metadata

@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig])
def test_every_field_has_help_and_a_rule(cls):
    infos = fields_of(cls)
    # every field but the chosen variants' options, which the class keeps itself
    assert [i.name for i in infos] == [f.name for f in dataclasses.fields(cls) if f.name != "options"]
    for i in infos:
        assert i.help, i.name
        assert i.type in (int, float, bool, str), i.name
        if i.type is str and i.norm is not None:  # a field that reads its own values says what it allows
            assert i.rule and i.norm(i.default) == i.default, i.name
        elif i.type is str:
            assert i.choices and i.default in i.choices, i.name
        if i.type in (int, float):
            assert i.min is not None and i.max is not None, i.name


def test_fields_of_reports_choices_ranges_and_optional():
    info = {i.name: i for i in fields_of(ModelConfig)}
    assert info["mlp"].choices == ("swiglu", "gelu", "relu2")
    assert info["pos"].choices == ("rope", "learned", "none")
    assert info["dim"].type is int and info["dim"].min == 1
    assert info["n_kv_heads"].optional and info["n_kv_heads"].default is None
    assert "n_heads" in info["n_kv_heads"].none_means
    assert fields_of(ModelConfig()) == fields_of(ModelConfig)


# ---------------------------------------------------------------- validation

def _bad_value(info):
    """A value that breaks the field's own rule."""
    if info.norm is not None:  # a field reading its own values (train.log_to): a name it lacks
        return "nope"
    if info.choices:
        return "nope"
    if info.type is bool:
        return "yes"
    if info.max is not None and info.type is int:
        return int(info.max) + 1
    return info.max * 2 + 1


@pytest.mark.parametrize("cls,info", [(c, i) for c in (ModelConfig, TrainConfig) for i in fields_of(c)],
                         ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_each_field_rejects_a_bad_value_naming_field_value_and_rule(cls, info):
    bad = _bad_value(info)
    with pytest.raises(ConfigError) as e:
        cls(**{info.name: bad})
    owner = "model" if cls is ModelConfig else "train"
    msg = str(e.value)
    assert msg.startswith(f"{owner}.{info.name} = {bad!r} is not allowed: expected ")
    assert info.allowed() in msg


@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig])
def test_every_choice_and_null_reads_back_from_text(cls):
    """What ``--set``, a sweep grid and the form type: each choice of a choice field as itself
    (``model.pos=none`` is NoPE, not null), null words for an optional field."""
    from workbench.config.fields import format_field
    from workbench.config.overrides import parse_overrides
    from workbench.planning.sweep import parse_pairs

    section = "model" if cls is ModelConfig else "train"
    for info in fields_of(cls):
        for choice in info.choices or ():
            text = format_field(info, choice)
            assert parse_overrides([f"{section}.{info.name}={text}"])[section] == {info.name: choice}
            assert parse_pairs([f"{section}.{info.name}={text},{text}"], "--grid", True) == \
                {f"{section}.{info.name}": [choice, choice]}
        if info.optional and None not in (info.choices or ()):
            assert parse_overrides([f"{section}.{info.name}=null"])[section] == {info.name: None}


@pytest.mark.parametrize("kwargs,expected", [
    ({"dim": 0}, "model.dim = 0 is not allowed: expected an integer >= 1 and <= 65536"),
    ({"dim": 64.5}, "model.dim = 64.5 is not allowed: expected an integer"),
    ({"dim": True}, "model.dim = True is not allowed"),
    ({"mlp": "relu"}, "model.mlp = 'relu' is not allowed: expected one of 'swiglu', 'gelu'"),
    ({"norm_eps": 0.0}, "model.norm_eps = 0.0 is not allowed: expected a number > 0"),
    ({"dropout": float("nan")}, "model.dropout = nan is not allowed"),
    ({"n_kv_heads": 0}, "or null (same as n_heads)"),
    ({"dim": 64, "n_heads": 5}, "model.n_heads = 5 is not allowed: it must divide model.dim = 64"),
    ({"dim": 64, "n_heads": 4, "n_kv_heads": 3}, "model.n_kv_heads = 3 is not allowed: it must divide"),
    ({"dim": 36, "n_heads": 4, "pos": "rope"}, "odd head_dim"),
])
def test_model_validation_messages(kwargs, expected):
    with pytest.raises(ValueError) as e:  # ConfigError is a ValueError
        ModelConfig(**kwargs)
    assert expected in str(e.value)


def test_cross_field_rules_accept_valid_combinations():
    assert ModelConfig(dim=36, n_heads=4, pos="learned").head_dim == 9
    assert ModelConfig(dim=64, n_heads=8, n_kv_heads=1).kv_heads == 1
    assert ModelConfig(dim=64.0).dim == 64 and isinstance(ModelConfig(dim=64.0).dim, int)


@pytest.mark.parametrize("kwargs,expected", [
    ({"lr": 0.0}, "train.lr = 0.0 is not allowed: expected a number > 0"),
    ({"schedule": "step"}, "one of 'cosine', 'linear', 'constant'"),
    ({"device": "tpu"}, "one of 'auto', 'cpu', 'cuda', 'mps'"),
    ({"precision": "fp8"}, "one of 'auto', 'fp32', 'bf16', 'fp16'"),
    ({"batch_size": 0}, "train.batch_size = 0 is not allowed"),
    ({"compile": 1}, "train.compile = 1 is not allowed: expected true or false"),
    ({"lr": 1e-3, "min_lr": 1e-2}, "train.min_lr = 0.01 is not allowed: it must be <= train.lr"),
    ({"max_steps": None}, "set at least one budget"),
])
def test_train_validation_messages(kwargs, expected):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert expected in str(e.value)


def test_budget_may_be_tokens_or_minutes():
    assert TrainConfig(max_steps=None, max_tokens=10_000).max_tokens == 10_000
    assert TrainConfig(max_steps=None, max_minutes=5).max_minutes == 5.0


def test_unknown_model_key_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"version": 1, "model": {"dim": 64, "dimm": 64, "layers": 2}})
    msg = str(e.value)
    assert "unknown model key(s) 'dimm', 'layers'" in msg
    assert "valid keys: " + ", ".join(f.name for f in fields_of(ModelConfig)) in msg


def test_unknown_train_and_top_level_keys_list_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown train key\(s\) 'epochs'; valid keys: batch_size, "):
        config_from_dict({"version": 1, "model": {}, "train": {"epochs": 3}})
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) 'modle'; valid keys: version, "):
        config_from_dict({"version": 1, "modle": {}})


def test_version_is_required_and_checked():
    with pytest.raises(ConfigError, match="missing 'version'"):
        config_from_dict({"model": {}})
    with pytest.raises(ConfigError, match="version = 99 .*not supported"):
        config_from_dict({"version": 99, "model": {}})


# ---------------------------------------------------------------- YAML io and presets

def test_yaml_round_trip(tmp_path):
    cfg = Config(ModelConfig(dim=48, n_heads=6, n_kv_heads=2, mlp="gelu", norm="layernorm",
                             pos="learned", bias=True, tie_embeddings=False, dropout=0.1),
                 TrainConfig(batch_size=4, max_steps=None, max_minutes=2.5, schedule="linear"),
                 data={"name": "stories"}, tokenizer="tok512", name="mine")
    path = save_config(tmp_path / "mine.yaml", cfg)
    raw = yaml.safe_load(path.read_text())
    assert raw["version"] == CONFIG_VERSION and list(raw)[:3] == ["version", "name", "model"]
    back = read_config(path)
    assert back.model == cfg.model and back.train == cfg.train
    assert back.data == cfg.data and back.tokenizer == cfg.tokenizer and back.name == "mine"
    save_config(tmp_path / "again.yaml", back)
    assert (tmp_path / "again.yaml").read_text() == path.read_text()


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name, tmp_path):
    cfg = load_config(name)
    assert cfg.name == name
    back = read_config(save_config(tmp_path / f"{name}.yaml", cfg))
    assert back.model == cfg.model and back.train == cfg.train


def test_every_shipped_preset_is_checked(tmp_path):
    assert sorted(preset_names(Workspace.at(tmp_path))) == sorted(PRESETS)


@pytest.mark.parametrize("name,minutes", [("cpu-10min", 10), ("cpu-30min", 30)])
def test_budget_presets_are_the_planners_recipe_with_a_measured_figure(name, minutes):
    import json
    import re

    from workbench.planning.planner import LAW_FILE

    cfg = load_config(name)
    recipe = json.loads(LAW_FILE.read_text())["recipe"]["train"]
    t = cfg.train
    assert (t.max_minutes, t.max_steps, t.max_tokens) == (minutes, None, None)
    assert (t.lr, t.schedule, t.optimizer) == (recipe["lr"], recipe["schedule"], recipe["optimizer"])
    assert cfg.model.vocab_size == 4096 and cfg.model.n_heads * 32 == cfg.model.dim
    assert re.search(r"Measured there \(\d{4}-\d\d-\d\d\): 0\.\d{3} bits per byte", cfg.description)


def test_preset_shapes_match_llama2c():
    s260 = load_config("stories260K").model
    assert (s260.dim, s260.n_layers, s260.n_heads, s260.kv_heads, s260.vocab_size,
            s260.max_seq_len, s260.ffn_dim) == (64, 5, 8, 4, 512, 512, 172)
    s15 = load_config("stories15M").model
    assert (s15.dim, s15.n_layers, s15.n_heads, s15.kv_heads, s15.vocab_size,
            s15.max_seq_len, s15.ffn_dim) == (288, 6, 6, 6, 32000, 256, 768)
    assert param_count(s15) == 15_191_712
    g = load_config("gpt2-style").model
    assert (g.pos, g.mlp, g.norm, g.bias) == ("learned", "gelu", "layernorm", True)


def test_load_config_prefers_workspace_models_then_packaged(tmp_path):
    ws = Workspace.at(tmp_path)
    assert "debug" in preset_names(ws)
    own = load_config("debug", ws).model.replace(dim=48)
    save_config(ws.models_dir(create=True) / "debug.yaml", Config(own))
    save_config(ws.models_dir() / "mine.yaml", Config(ModelConfig(dim=24, n_heads=2)))
    assert load_config("debug", ws).model.dim == 48
    assert load_config("debug").model.dim == 32  # the packaged one is untouched
    assert load_config("mine", ws).model.dim == 24
    assert load_config(str(ws.models_dir() / "mine.yaml")).model.dim == 24
    assert "mine" in preset_names(ws)


def test_load_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no config or preset named 'nope'; available: .*debug"):
        load_config("nope", Workspace.at(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: {dim: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    bad.write_text("version: 1\nmodel: {mlp: relu}\n")
    with pytest.raises(ConfigError, match=r"model.mlp = 'relu' .* in .*bad.yaml"):
        load_config(str(bad))


# ---------------------------------------------------------------- estimates without torch

def test_config_and_estimates_do_not_import_torch():
    """Nor textual: the Config pane's text comes from config_report on the UI thread."""
    code = ("import sys; import workbench.config.schema as c, workbench.machine.estimate as e;"
            "import workbench.config.sizes as s; from workbench.config import report as r;"
            "cfg = c.load_config('stories15M'); m = cfg.model; s.param_count(m); s.flops_per_token(m);"
            "e.training_memory(m, 8); e.kv_cache_bytes(m); m.n_params;"
            "e.fit(m, 8, device='cpu');"
            "x = r.estimates(m, cfg.train); r.render(r.estimate_lines(x), markup=True);"
            "r.render(r.diff_lines([('model.dim', 1, 2)], 'x'));"
            "print('torch' in sys.modules, 'textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_memory_breakdown_and_verdict():
    m = load_config("stories15M").model
    n = param_count(m)
    mem = training_memory(m, batch_size=8, precision="fp32")
    assert (mem.weights, mem.grads, mem.optimizer) == (4 * n, 4 * n, 8 * n)
    assert mem.total == mem.weights + mem.grads + mem.optimizer + mem.activations + mem.runtime
    bigger = training_memory(m, batch_size=16)
    assert bigger.activations == pytest.approx(2 * mem.activations, rel=0.01)
    half = training_memory(m, batch_size=8, precision="bf16", device="cuda")
    full = training_memory(m, batch_size=8, precision="fp32", device="cuda")
    assert half.activations < full.activations and half.weights == 6 * n
    # CPU training computes the loss without the full logits: at vocab 32000 that is most of it
    assert mem.activations < full.activations / 2
    assert kv_cache_bytes(m, 2, 100) == 2 * 6 * 2 * 6 * 100 * 48 * 4
    assert verdict(50, 100).verdict == "fits"
    assert verdict(90, 100).verdict == "tight"
    assert verdict(101, 100).verdict == "won't fit"
    assert "needs" in verdict(101, 100).message
    assert sum(param_breakdown(m).values()) == n
