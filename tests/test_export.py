"""Export: a transformers Llama folder whose logits match ours, refusals with reasons, plain
weights that load back, and atomic replacement of an existing folder."""

from __future__ import annotations

import json

import pytest
import torch

from runmaker import make_run
from workbench.cli import main
from workbench.config import read_config
from workbench.errors import WorkbenchError
from workbench.export import export_run
from workbench.model import build_model


@pytest.mark.parametrize("tie,kv", [(True, 2), (False, 4), (True, 1)])
def test_hf_export_loads_in_transformers_and_logits_match(built, tmp_path, tie, kv):
    tf = pytest.importorskip("transformers")
    name = f"exp-hf-{tie}-{kv}"
    _, net = make_run(built, name, seed=3, tie_embeddings=tie, n_kv_heads=kv, rope_theta=500.0)
    net.init_weights(std=0.2)  # not the saved weights: the export must use the checkpoint
    out = export_run(built, name, tmp_path / "hf", "hf")
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
            "special_tokens_map.json"} <= set(out["files"])
    hf = tf.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    from workbench.generate import load_for_generation

    ours, *_ = load_for_generation(built, name, device="cpu")
    x = torch.randint(0, 400, (2, 64))
    with torch.no_grad():
        a, b = ours(x), hf(input_ids=x).logits
    assert (a - b).abs().max() < 1e-4
    # greedy generation agrees too (the cache layouts differ, the tokens must not)
    prompt = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=True,
                             eos_token_id=None, pad_token_id=0)[0, 4:].tolist()
    from workbench.generate import token_loop
    from workbench.sampling import SamplingParams

    mine = [s.id for s in token_loop(ours, [1, 50, 60, 70], SamplingParams(max_tokens=20, temperature=0, stop_at_eos=False))]
    assert mine == theirs


def test_hf_tokenizer_matches_ours(built, tmp_path):
    tf = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")  # transformers reads tokenizer.model through protobuf
    make_run(built, "exp-tok")
    export_run(built, "exp-tok", tmp_path / "hf", "hf")
    from workbench.tokenizer import load_tokenizer

    ours = load_tokenizer(built, "tok")
    theirs = tf.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in ["Once upon a time, Lily said \"Let's go!\"", " the cat 日本 😀", "a  b\nc"]:
        assert theirs.encode(text) == ours.encode(text, bos=True)
        assert theirs.decode(ours.encode(text), skip_special_tokens=True) == text


@pytest.mark.parametrize("change,reason", [
    ({"mlp": "gelu"}, "mlp is 'gelu'"), ({"norm": "layernorm"}, "norm is 'layernorm'"),
    ({"pos": "learned"}, "pos is 'learned'"), ({"pos": "none"}, "pos is 'none'"),
    ({"bias": True}, "bias is true")])
def test_hf_export_refuses_non_llama_configs(built, tmp_path, change, reason):
    name = "exp-refuse-" + "-".join(f"{k}{v}" for k, v in change.items())
    make_run(built, name, **change)
    with pytest.raises(WorkbenchError, match=reason) as e:
        export_run(built, name, tmp_path / "out", "hf")
    assert "--format weights" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_weights_export_loads_back(built, tmp_path):
    _, net = make_run(built, "exp-w", mlp="gelu", norm="layernorm", pos="learned", bias=True)
    assert main(["--workspace", str(built.root), "export", "exp-w", "--to", str(tmp_path / "w"),
                 "--format", "weights"]) == 0
    from safetensors.torch import load_file

    cfg = read_config(tmp_path / "w" / "config.yaml").model
    m = build_model(cfg)
    m.load_state_dict(load_file(str(tmp_path / "w" / "model.safetensors")), strict=False)
    x = torch.randint(0, 400, (1, 20))
    with torch.no_grad():
        assert torch.equal(m.eval()(x), net(x))
    assert (tmp_path / "w" / "tokenizer.model").is_file()


def test_export_replaces_only_with_force(built, tmp_path, capsys):
    make_run(built, "exp-force")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    ws = ["--workspace", str(built.root)]
    assert main([*ws, "export", "exp-force", "--to", str(dest), "--format", "weights"]) == 2
    assert "already exists" in capsys.readouterr().err and (dest / "keep.txt").is_file()
    assert main([*ws, "export", "exp-force", "--to", str(dest), "--format", "weights", "--force", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == "step_000001" and not (dest / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]  # no temp folders left
