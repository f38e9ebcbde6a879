"""`workbench config list | show | new` end to end through the real CLI, and the shared text the
Config pane shows (``workbench.config.report``)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from workbench.config import sizes
from workbench.machine import estimate as est
from workbench.cli import main
from workbench.config.schema import load_config
from workbench.config.report import (ConfigRequest, config_report, estimate_lines, render, report_lines)
from workbench.workspace import Workspace


def cli(ws, *args, capsys):
    rc = main(["--workspace", str(ws), "config", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def show_json(ws, *args, capsys) -> dict:
    rc, out, err = cli(ws, "show", *args, "--json", capsys=capsys)
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture
def own_built(built, tmp_path) -> Workspace:
    """A copy of the session workspace with tokenizer ``tok`` (vocab 400), free to write in."""
    shutil.copytree(built.root, tmp_path / "ws")
    return Workspace.at(tmp_path / "ws")


def test_list_shows_presets_and_saved_configs(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert cli(ws, "new", "mine", "--from", "debug", "--set", "model.dim=64", capsys=capsys)[0] == 0
    rc, out, _ = cli(ws, "list", capsys=capsys)
    assert rc == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows["mine"] == "models/" and rows["debug"] == "preset" and rows["stories15M"] == "preset"

    rc, out, _ = cli(ws, "list", "--json", capsys=capsys)
    listed = {e["name"]: e for e in json.loads(out)}
    assert listed["mine"]["params"] == sizes.param_count(load_config("debug").model.replace(dim=64))
    assert listed["debug"]["description"] == load_config("debug").description
    assert listed["mine"]["path"] == str(Workspace.at(ws).models_dir() / "mine.yaml")


def test_show_prints_fields_estimates_verdict_and_diff(tmp_path, capsys):
    ws = tmp_path / "ws"
    rc, out, err = cli(ws, "show", "debug", "--set", "model.dim=64", "--set", "train.lr=0.002", capsys=capsys)
    assert rc == 0, err
    n = sizes.param_count(load_config("debug").model.replace(dim=64))
    assert out.startswith("debug (preset): A very small model")
    assert "* dim" in out and "  n_layers" in out and "* lr" in out  # changed fields are marked
    assert f"parameters      {n / 1e3:.2f}K  ({n:,})" in out
    assert "training memory" in out and re.search(r"^available (RAM|cuda memory) ", out, re.MULTILINE)
    assert re.search(r"^verdict         (fits|tight|won't fit)$", out, re.MULTILINE)
    assert "Changes vs debug (preset)\nmodel.dim: 32 → 64\ntrain.lr: 0.003 → 0.002" in out
    assert "[b]" not in out and "[/" not in out and "[dim]" not in out  # plain text, no markup
    assert not ws.exists()  # showing writes nothing

    d = show_json(ws, "debug", "--set", "model.dim=64", "--set", "train.lr=0.002", capsys=capsys)
    e = d["estimates"]
    assert e["params"] == n and sum(e["params_breakdown"].values()) == n
    assert e["flops_per_token"] == sizes.flops_per_token(load_config("debug").model.replace(dim=64))
    assert e["verdict"]["verdict"] in ("fits", "tight", "won't fit")
    assert e["verdict"]["needed"] == e["memory"]["total"] and e["verdict"]["available"] == e["machine"]["available"]
    assert e["memory"]["batch_size"] == 8 and e["head_dim"] == 16
    assert d["diff"] == [{"field": "model.dim", "old": 32, "new": 64}, {"field": "train.lr", "old": 0.003, "new": 0.002}]
    changed = {f"{f['section']}.{f['name']}" for f in d["fields"] if f["changed"]}
    assert changed == {"model.dim", "train.lr"}
    dim = next(f for f in d["fields"] if f["name"] == "dim")
    assert dim["value"] == 64 and dim["default"] == 64 and "integer" in dim["allowed"] and dim["help"]
    assert d["config"]["model"]["dim"] == 64 and d["base"] == "debug (preset)" and d["notices"] == []


def test_tokenizer_sets_the_vocab_and_a_pinned_vocab_must_match(built, capsys):
    d = show_json(built.root, "debug", "--tokenizer", "tok", capsys=capsys)
    assert d["config"]["model"]["vocab_size"] == 400
    assert d["notices"] == ["model.vocab_size 512 → 400 from tokenizer tok"]
    assert {"field": "model.vocab_size", "old": 512, "new": 400} in d["diff"]
    assert d["estimates"]["params_breakdown"]["embedding"] == 400 * 32

    rc, out, err = cli(built.root, "show", "debug", "--tokenizer", "tok", capsys=capsys)
    assert rc == 0 and "notice: model.vocab_size 512 → 400 from tokenizer tok" in out

    rc, _, err = cli(built.root, "show", "debug", "--tokenizer", "tok", "--set", "model.vocab_size=512", capsys=capsys)
    assert rc == 2 and "model.vocab_size = 512 does not match tokenizer 'tok', which has 400 pieces" in err

    rc, _, err = cli(built.root, "show", "debug", "--tokenizer", "nope", capsys=capsys)
    assert rc == 2 and "tokenizer 'nope' not found" in err and "tok" in err


def test_minutes_is_the_budget_and_a_measured_speed_buys_tokens(tmp_path, monkeypatch, capsys):
    """The tokens a time budget buys come from this machine's cached speed for the shape; with
    none cached the command says so and measures nothing."""
    import torch

    from helpers import inject_matmul
    from workbench.planning import planner
    from workbench.machine.probe import CACHE_ENV, write_cached

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    inject_matmul(0.5)
    args = ("debug", "--minutes", "10", "--set", "train.device=cpu")
    d = show_json(tmp_path / "ws", *args, capsys=capsys)
    train = d["config"]["train"]
    assert (train["max_minutes"], train["max_steps"], train["max_tokens"]) == (10.0, None, None)
    assert d["estimates"]["budget"] == {"minutes": 10.0, "measured": False}
    _, out, _ = cli(tmp_path / "ws", "show", *args, capsys=capsys)
    assert "speed here      not measured on this machine yet" in out and "budget buys" not in out

    cfg = load_config("debug")
    write_cached({planner.throughput_key(cfg.model, cfg.train.batch_size, "auto", torch.get_num_threads(), "adamw"):
                  {"tok_s": 20000.0, "precision": "fp32", "attention": "sdpa", "threads": 1}})
    tokens = int(20000.0 * 10 * 60 * planner.STEP_SHARE)
    budget = show_json(tmp_path / "ws", *args, capsys=capsys)["estimates"]["budget"]
    assert budget["measured"] and budget["tok_s"] == 20000.0 and budget["tokens"] == tokens
    _, out, _ = cli(tmp_path / "ws", "show", *args, capsys=capsys)
    assert "speed here      20,000 tok/s measured (fp32, 1 thread(s))" in out
    assert f"budget buys     {tokens / 1e6:.2f}M tokens in 10 min" in out

    # a --set budget wins over the shorthand
    d = show_json(tmp_path / "ws", *args, "--set", "train.max_steps=50", capsys=capsys)
    assert d["config"]["train"]["max_steps"] == 50 and d["config"]["train"]["max_minutes"] == 10.0


def test_new_writes_a_config_that_loads_back_equal_and_never_overwrites_silently(own_built, capsys):
    ws = own_built
    args = ("new", "mine", "--from", "debug", "--tokenizer", "tok", "--set", "model.n_layers=3", "--minutes", "5")
    rc, out, err = cli(ws.root, *args, capsys=capsys)
    assert rc == 0, err
    path = ws.models_dir() / "mine.yaml"
    assert f"saved models/mine.yaml: {path}" in out
    assert "notice: model.vocab_size 512 → 400 from tokenizer tok" in out
    assert "model.n_layers: 2 → 3" in out and "train.max_minutes: null → 5.0" in out

    shown = config_report(ws, ConfigRequest("debug", ("model.n_layers=3",), "tok", 5)).config
    saved = load_config("mine", ws)
    assert saved.model == shown.model and saved.train == shown.train and saved.name == "mine"
    assert saved.description == load_config("debug").description

    before = path.read_text()
    rc, _, err = cli(ws.root, "new", "mine", "--from", "debug", capsys=capsys)
    assert rc == 2 and err.strip() == "error: models/mine.yaml exists: pass --force to replace it, or choose another name"
    assert path.read_text() == before

    rc, _, err = cli(ws.root, "new", "mine", "--from", "mine", "--set", "train.lr=0.002", "--force", capsys=capsys)
    assert rc == 0, err
    again = load_config("mine", ws)
    assert again.train.lr == 0.002 and again.model == saved.model

    rc, out, _ = cli(ws.root, "new", "other", "--from", "mine", "--json", capsys=capsys)
    d = json.loads(out)
    assert rc == 0 and d["path"] == str(ws.models_dir() / "other.yaml") and d["diff"] == [] and d["base"] == "mine (models/)"


BAD = [
    (["show", "nope"], "no config or preset named 'nope'; available: ", "debug"),
    (["show", "debug", "--set", "model.dim=abc"], "model.dim = 'abc' is not allowed", "expected an integer >= 1"),
    (["show", "debug", "--set", "model.dim=66"], "model.n_heads = 4 is not allowed", "it must divide model.dim = 66"),
    (["show", "debug", "--set", "model.mlp=relu"], "model.mlp = 'relu' is not allowed", "expected one of 'swiglu'"),
    (["show", "debug", "--set", "model.width=3"], "unknown model field 'width'", "valid fields: vocab_size, dim"),
    (["show", "debug", "--set", "train.lr"], "--set 'train.lr' is not SECTION.FIELD=VALUE", "train.max_steps=500"),
    (["show", "debug", "--minutes", "0"], "minutes = 0.0 is not allowed", "expected a number > 0"),
    (["new", "mine", "--from", "debug", "--set", "model.dim=66"], "model.n_heads = 4 is not allowed", "model.dim = 66"),
    (["new", "mine", "--from", "debug", "--set", "train.min_lr=0.5"], "train.min_lr = 0.5 is not allowed",
     "<= train.lr = 0.003"),
    (["new", "../mine", "--from", "debug"], "config name '../mine' is not allowed", "letters, digits"),
    (["new", "mine", "--from", "nope"], "no config or preset named 'nope'", "debug"),
]


@pytest.mark.parametrize("args,what,allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, what, allowed):
    ws = tmp_path / "ws"
    rc, out, err = cli(ws, *args, capsys=capsys)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert what in err and allowed in err
    assert not ws.exists()


def test_the_pane_and_the_cli_show_the_same_text():
    """The pane renders the same lines with markup; what it shows is what the CLI prints."""
    from textual.content import Content

    rep = config_report(None, ConfigRequest("stories260K", ("train.max_minutes=3",)), machine=("cpu", {
        "available": 8 * est.GiB, "total": 16 * est.GiB}))
    lines = report_lines(rep)
    assert Content.from_markup(render(lines, markup=True)).plain == render(lines)
    assert "[b green]fits[/]" in render(estimate_lines(rep.estimates), markup=True)
    unknown = render(estimate_lines(config_report(None, ConfigRequest("debug"), ("cpu", {})).estimates))
    assert "available RAM   0 B of 0 B" in unknown and "verdict         won't fit" in unknown


def test_a_fields_help_says_what_it_is_for_allows_and_defaults_to():
    from workbench.config.schema import ModelConfig
    from workbench.config.fields import fields_of
    from workbench.config.report import field_help

    info = next(f for f in fields_of(ModelConfig) if f.name == "n_kv_heads")
    assert render(field_help("model", info)) == (f"model.n_kv_heads: {info.help}\n"
                                                 f"allowed: {info.allowed()}; default null")
    assert render(field_help("model", info), markup=True).startswith("[b]model.n_kv_heads[/]: ")


def test_a_form_is_checked_whole_and_a_rule_across_fields_is_said_beside_each():
    from workbench.config.schema import ModelConfig, TrainConfig
    from workbench.config.report import check_form

    values = {"model": ModelConfig().to_dict(), "train": TrainConfig().to_dict()}
    model, train, shown, line = check_form(values, {})
    assert (model, train, shown, line) == (ModelConfig(), TrainConfig(), {}, "")
    bad = {**values, "model": {**values["model"], "dim": 64, "n_heads": 5}}
    model, _, shown, line = check_form(bad, {})
    assert model is None and line.startswith("model.n_heads = 5 is not allowed") and set(shown) == {
        "model.n_heads", "model.dim"} and set(shown.values()) == {line}
    assert check_form(values, {"model.dim": "x"})[2:] == ({"model.dim": "x"}, "")  # said beside it
    assert check_form(values, {"model.dim": "x", "train.lr": "y"})[3] == "2 fields have invalid values"


def test_the_pane_saves_as_the_cli_does(own_built):
    """``save_as`` writes models/NAME.yaml for `config new` and the Config pane alike."""
    from workbench.config.report import models_path, save_as
    from workbench.errors import WorkbenchError

    base = load_config("debug", own_built)
    path, saved = save_as(own_built, "mine", base)
    assert path == models_path(own_built, "mine") == own_built.models_dir() / "mine.yaml"
    assert saved.name == "mine" and saved.source is None and saved.description == base.description
    assert load_config("mine", own_built).model == base.model
    with pytest.raises(WorkbenchError, match="config name 'a/b' is not allowed"):
        models_path(own_built, "a/b")


@pytest.mark.parametrize("text", ["0", "-1", "abc", "nan", "inf", "10000001"])
def test_the_panes_plan_box_is_checked_as_a_plan_request(text):
    from workbench.errors import WorkbenchError
    from workbench.config.overrides import MINUTES_ALLOWED, parse_minutes
    from workbench.planning.planner import PlanRequest

    assert parse_minutes(" 2.5 ") == 2.5 and PlanRequest(None, 2.5, vocab=512).validate()
    with pytest.raises(WorkbenchError) as e:
        parse_minutes(text)
    assert str(e.value) == f"minutes = {text!r} is not allowed: {MINUTES_ALLOWED}"


@pytest.mark.parametrize("verb", [[], ["list"], ["show"], ["new"]])
def test_help_reads_as_plain_text(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main(["config", *verb, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: workbench config" in out
    assert "``" not in out and out.count("`") % 2 == 0


def test_config_show_says_which_export_formats_hold_the_model(capsys):
    """Before training: gguf and llama2c refuse the default recipe's ReLU² MLP (each names why,
    as `workbench export` would; hf holds it), and every format holds a SwiGLU model; --json too."""
    from workbench.export import formats_for

    assert main(["config", "show", "cpu-10min"]) == 0
    out = capsys.readouterr().out
    assert "exports to      hf, weights\n" in out
    for fmt, client in (("gguf", "llama.cpp"), ("llama2c", "run.c")):
        assert f"  not {fmt}: mlp is 'relu2' ({client} uses 'swiglu')" in out
    assert main(["config", "show", "cpu-10min", "--set", "model.mlp=swiglu", "--json"]) == 0
    exports = json.loads(capsys.readouterr().out)["estimates"]["exports"]
    assert [(x["format"], x["why_not"]) for x in exports] == [("hf", None), ("gguf", None), ("llama2c", None),
                                                               ("weights", None)]
    # the same answer the exporter gives (one decision)
    model = load_config("cpu-10min").model
    assert [x["why_not"] is None for x in formats_for(model)] == [True, False, False, True]
