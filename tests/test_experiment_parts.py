"""Experiments beyond one layer's part: a variant's own config fields (options), whole-model
variants (a user's, and the built-in value embeddings, which began as one) and an optimizer
variant (the shipped Adagrad), each checked against a hand computation, not against the code
that made it."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from helpers import SETS, WHOLE, WIDE
from workbench.cli import main
from workbench.config.overrides import parse_overrides, sections_of
from workbench.config.schema import ModelConfig, TrainConfig, config_from_dict
from workbench.errors import ConfigError
from workbench.experiments import registry
from workbench.experiments.loader import experiment_dirs, load_experiments
from workbench.workspace import Workspace

pytestmark = pytest.mark.usefixtures("clean_registry")

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "experiments")


def _ws(built, tmp_path, text: str = WIDE, name: str = "wide.py") -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(built.root, root)
    (root / "experiments").mkdir()
    (root / "experiments" / name).write_text(text)
    return Workspace.at(root)


def _examples() -> None:
    assert load_experiments(experiment_dirs(None, [EXAMPLES])).errors == []


# ---------------------------------------------------------------- options


def test_an_option_is_checked_defaulted_read_as_an_attribute_and_written_flat(built, tmp_path):
    ws = _ws(built, tmp_path)
    load_experiments(experiment_dirs(ws.root))
    cfg = ModelConfig(dim=32, n_heads=4, mlp="wide")
    assert cfg.wide == 2 and cfg.wide_note == "a"  # the declared defaults
    d = cfg.to_dict()
    assert d["wide"] == 2 and d["mlp"] == "wide" and "options" not in d  # flat beside the built-in fields
    back = config_from_dict({"version": 1, "model": {**d, "wide": 3}}).model
    assert back.wide == 3 and back == cfg.replace(wide=3)  # YAML and replace agree
    # the option changes the model: hidden units = wide x dim, counted by hand
    n_wide = {w: ModelConfig(dim=32, n_heads=4, n_layers=2, vocab_size=100, mlp="wide", options={"wide": w}).n_params
              for w in (2, 3)}
    assert n_wide[3] - n_wide[2] == 2 * 2 * 32 * 32  # two layers, w1 and w2 each one dim x dim more
    with pytest.raises(ConfigError, match=r"model.wide = 17 is not allowed: expected an integer >= 1 and <= 16"):
        cfg.replace(wide=17)
    with pytest.raises(ConfigError, match=r"model.wide_note = 'c' is not allowed: expected one of 'a', 'b'"):
        config_from_dict({"version": 1, "model": {"mlp": "wide", "wide_note": "c"}})


def test_an_option_of_a_variant_not_chosen_is_refused_naming_it(built, tmp_path):
    ws = _ws(built, tmp_path)
    load_experiments(experiment_dirs(ws.root))
    with pytest.raises(ConfigError) as e:
        config_from_dict({"version": 1, "model": {"mlp": "swiglu", "wide": 3}})
    assert "model.wide is an option of mlp 'wide', which this config does not choose (model.mlp = 'swiglu')" in str(e.value)
    with pytest.raises(ConfigError, match="unknown model key"):
        config_from_dict({"version": 1, "model": {"mlp": "wide", "wider": 3}})
    # changing the choice drops the old variant's options instead of carrying them silently
    cfg = ModelConfig(mlp="wide").replace(wide=4)
    assert cfg.replace(mlp="gelu").options == ()
    with pytest.raises(ConfigError, match="does not choose"):
        cfg.replace(mlp="gelu", wide=4)


def test_set_and_sweep_keys_take_an_option(built, tmp_path, corpus_dir, capsys):
    ws = _ws(built, tmp_path)
    assert main(["--workspace", str(ws.root), "experiment", "list"]) == 0
    assert "model.wide = 2 (an integer >= 1 and <= 16): hidden units per model dimension" in capsys.readouterr().out
    load_experiments(experiment_dirs(ws.root))
    assert parse_overrides(["model.mlp=wide", "model.wide=5"])["model"] == {"mlp": "wide", "wide": 5}
    with pytest.raises(ConfigError, match=r"model.wide = 'x' is not allowed: expected an integer"):
        parse_overrides(["model.wide=x"])
    assert sections_of({"model.wide": 3})["model"] == {"wide": 3}
    rc = main(["--workspace", str(ws.root), "train", "--config", "debug", "--tokenizer", "tok", "--data",
               str(corpus_dir), "--name", "w3", *SETS, "--set", "model.mlp=wide", "--set", "model.wide=3",
               "--set", "train.max_steps=2"])
    assert rc == 0
    from workbench.runs.folder import get_run

    raw = get_run(ws, "w3").raw_config()
    assert raw["model"]["wide"] == 3 and raw["model"]["mlp"] == "wide"  # recorded with the run
    capsys.readouterr()
    assert main(["--workspace", str(ws.root), "config", "show", "debug", "--set", "model.wide=3"]) == 2
    err = capsys.readouterr().err
    assert "model.wide is an option of mlp 'wide'" in err and len(err.strip().splitlines()) == 1


def test_an_option_may_not_shadow_a_field_or_be_declared_twice_differently():
    with pytest.raises(ValueError, match="'dim' is already a model field"):
        registry.register("mlp", "bad", options={"dim": registry.option(1, "x", min=0, max=2)})
    registry.register("mlp", "one", options={"k": registry.option(1, "k", min=0, max=2)})(type("One", (), {}))
    with pytest.raises(ValueError, match="declared differently by mlp 'one'"):
        registry.register("norm", "two", options={"k": registry.option(2, "k", min=0, max=4)})
    with pytest.raises(ValueError, match="does not pass its own rule"):
        registry.register("mlp", "three", options={"m": registry.option(5, "m", min=0, max=2)})


# ---------------------------------------------------------------- a whole-model variant


def test_value_embeddings_add_the_parameters_counted_by_hand_and_decode_like_a_full_forward():
    from workbench.experiments.verbs import check_experiment
    from workbench.model import KVCache, build_model

    base = ModelConfig(vocab_size=97, dim=32, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=16)
    ve = base.replace(arch="value_embed", ve_layers=2)
    kv = base.kv_heads * base.head_dim
    # two tables of vocab x (kv heads x head dim); each of the 4 layers fed gets 2 mixing weights
    assert ve.n_params - base.n_params == 2 * 97 * kv + 4 * 2
    model = build_model(ve, seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == ve.n_params
    idx = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)
        model_plain = build_model(base, seed=0).eval()
        assert not torch.allclose(full, model_plain(idx), atol=1e-3)  # the tables take part
        cache = KVCache.for_model(model, batch_size=1)
        steps = [model(idx[:, :5], kv_cache=cache)[:, -1]] + [model(idx[:, t:t + 1], kv_cache=cache)[:, -1]
                                                            for t in range(5, 12)]
    # decoding token by token reads each new token's own value embedding
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:], rtol=1e-4, atol=1e-4)
    result = check_experiment("value_embed")  # bf16 autocast with each attention kernel, a trace
    assert result.ok, result.line


def test_a_whole_model_variant_trains_resumes_and_is_traced(built, corpus_dir, tmp_path, capsys):
    import json

    ws = _ws(built, tmp_path, WHOLE, "scaled_emb.py")
    cli = ["--workspace", str(ws.root)]
    for name, steps in (("ve", 4), ("straight", 6)):
        assert main([*cli, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
                     "--name", name, *SETS, "--set", "model.arch=scaled_emb", "--set", "model.emb_scale=0.5",
                     "--set", f"train.max_steps={steps}", "--set", "train.checkpoint_interval=2",
                     "--set", "train.log_interval=1"]) == 0
    assert main([*cli, "train", "--resume", "ve", "--set", "train.max_steps=6"]) == 0

    def train_losses(run):
        rows = [json.loads(line) for line in (ws.run_path(run) / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    assert train_losses("ve") == train_losses("straight")  # the resume goes on step for step
    out_json = tmp_path / "t.json"
    capsys.readouterr()
    assert main([*cli, "trace", "--run", "ve", "--json", str(out_json)]) == 0

    def logs(node):
        yield from node["logs"]
        for c in node["children"]:
            yield from logs(c)
    assert "scaled_emb" in set(logs(json.loads(out_json.read_text())["root"]))
    assert main([*cli, "export", "ve", "--format", "gguf", "--to", str(tmp_path / "g")]) == 2
    assert "arch is 'scaled_emb'" in capsys.readouterr().err
    from workbench.runs.folder import get_run, run_config

    assert run_config(get_run(ws, "ve")).model.emb_scale == 0.5  # its field, kept with the run


# ---------------------------------------------------------------- an optimizer variant


def test_adagrad_steps_as_the_formula_says():
    _examples()
    from workbench.model import build_model
    from workbench.training.optim import make_optimizer

    tc = TrainConfig(optimizer="adagrad", lr=0.01).replace(adagrad_eps=1e-10)
    model = build_model(ModelConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, max_seq_len=8), seed=0)
    opt = make_optimizer(model, tc, torch.device("cpu"))
    idx = torch.randint(0, 50, (2, 8))
    model(idx, targets=idx).backward()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        w, g = before[n]
        # Adagrad's first step: sum = g², w -= lr * g / (sqrt(sum) + eps)
        torch.testing.assert_close(p.detach(), w - 0.01 * g / (g.abs() + 1e-10), rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="train.adagrad_eps is an option of optimizer 'adagrad'"):
        TrainConfig(optimizer="adamw", options={"adagrad_eps": 1e-8})


def test_muon_leaves_embedding_tables_to_adamw():
    from workbench.config.sizes import hidden_matrix_params
    from workbench.model import build_model
    from workbench.training.optim import make_optimizer

    cfg = ModelConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, max_seq_len=8, arch="value_embed")
    model = build_model(cfg, seed=0)
    opt = make_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    muon, adamw = opt.optimizers
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    assert not any(id(t.weight) in in_muon for t in model.value_embeds)  # tables: AdamW
    # Muon: each layer's wqkv (16 x 32), wo (16 x 16) and the MLP's three 16 x 48... by hand
    per_layer = 16 * (2 + 2 * 2) * 8 + 16 * 16 + 3 * 16 * cfg.ffn_dim
    assert sum(p.numel() for g in muon.param_groups for p in g["params"]) == 2 * per_layer == hidden_matrix_params(cfg)


@pytest.mark.parametrize("part", ["model", "optimizer"])
def test_new_from_the_whole_model_or_the_optimizer_checks(part, tmp_path, capsys):
    ws = Workspace.at(tmp_path / "ws")
    assert main(["--workspace", str(ws.root), "experiment", "new", f"my_{part}", "--from", part]) == 0
    text = (ws.root / "experiments" / f"my_{part}.py").read_text()
    assert f'@register("{part}", "my_{part}"' in text
    capsys.readouterr()
    assert main(["--workspace", str(ws.root), "experiment", "check", f"my_{part}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: "), out
    assert ("one optimizer step" in out) == (part == "optimizer")
