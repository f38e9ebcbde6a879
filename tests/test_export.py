"""Export, without the outside programs: a transformers Llama folder whose logits match ours,
refusals naming every unsupported switch (before anything is written), plain weights that load
back strictly, the RoPE row order the interleaved formats need, the llama2.c file layouts, the
options, and the export folder's safety rules (the marker, --force, nothing half-written).

The outside programs themselves (run.c, llama.cpp, transformers generate) are in
test_export_clients.py."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
import torch

from helpers import make_run
from workbench.cli import main
from workbench.config.schema import ModelConfig, read_config
from workbench.errors import WorkbenchError
from workbench.export import MARKER, export_run, format_choices, read_marker
from workbench.export.layout import interleave_heads, llama_incompatibilities
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
    from workbench.generation.generate import load_for_generation

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
    from workbench.generation.generate import token_loop
    from workbench.generation.sampling import SamplingParams

    mine = [s.id for s in token_loop(ours, [1, 50, 60, 70], SamplingParams(max_tokens=20, temperature=0, stop_at_eos=False))]
    assert mine == theirs


def test_hf_tokenizer_matches_ours(built, tmp_path):
    tf = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")  # transformers reads tokenizer.model through protobuf
    make_run(built, "exp-tok")
    export_run(built, "exp-tok", tmp_path / "hf", "hf")
    from workbench.tokenizer.tokenizer import load_tokenizer

    ours = load_tokenizer(built, "tok")
    theirs = tf.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in ["Once upon a time, Lily said \"Let's go!\"", " the cat 日本 😀", "a  b\nc"]:
        assert theirs.encode(text) == ours.encode(text, bos=True)
        assert theirs.decode(ours.encode(text), skip_special_tokens=True) == text


# --- refusals ------------------------------------------------------------------------------

NOT_LLAMA = [({"mlp": "gelu"}, "mlp is 'gelu'"), ({"norm": "layernorm"}, "norm is 'layernorm'"),
             ({"pos": "learned"}, "pos is 'learned'"), ({"pos": "none"}, "pos is 'none'"),
             ({"bias": True}, "bias is true")]


@pytest.mark.parametrize("fmt", ["hf", "gguf", "llama2c"])
@pytest.mark.parametrize("change,reason", NOT_LLAMA)
def test_llama_formats_refuse_non_llama_configs(built, tmp_path, fmt, change, reason):
    name = "exp-refuse-" + "-".join(f"{k}{v}" for k, v in change.items())
    if not built.run_path(name).exists():
        make_run(built, name, **change)
    with pytest.raises(WorkbenchError, match=reason) as e:
        export_run(built, name, tmp_path / "out", fmt)
    assert "--format weights" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp folder


def test_refusal_names_every_switch_at_once(built, tmp_path):
    make_run(built, "exp-refuse-all", mlp="gelu", norm="layernorm", pos="learned", bias=True)
    with pytest.raises(WorkbenchError) as e:
        export_run(built, "exp-refuse-all", tmp_path / "out", "llama2c")
    msg = str(e.value)
    assert all(s in msg for s in ("mlp is 'gelu'", "norm is 'layernorm'", "pos is 'learned'", "bias is true"))


@pytest.mark.parametrize("change,reason", [({"rope_theta": 500.0}, "rope_theta is 500.0 (run.c hard-codes 10000.0)"),
                                           ({"norm_eps": 1e-6}, "norm_eps is 1e-06 (run.c hard-codes 1e-05)")])
def test_run_c_refuses_what_it_hard_codes_and_the_others_write_it(built, tmp_path, change, reason):
    name = "exp-runc-" + "-".join(change)
    make_run(built, name, **change)
    with pytest.raises(WorkbenchError, match=reason.replace("(", r"\(").replace(")", r"\)")) as e:
        export_run(built, name, tmp_path / "c", "llama2c")
    assert "--format hf or --format gguf or --format weights" in str(e.value)
    assert not (tmp_path / "c").exists()
    export_run(built, name, tmp_path / "g", "gguf")  # gguf and hf store these values
    export_run(built, name, tmp_path / "h", "hf")


def test_a_switch_the_exporter_does_not_know_is_refused_unless_default():
    @dataclasses.dataclass(frozen=True)
    class Later(ModelConfig):  # a variant added to the model after this exporter was written
        qk_norm: bool = False

    assert llama_incompatibilities(Later(), "Llama") == []
    why = llama_incompatibilities(Later(qk_norm=True), "run.c")
    assert why == ["qk_norm is true, a switch this exporter does not know (run.c can only be "
                   "given the default false)"]


def test_format_choices_pick_the_best_and_say_why_not(built):
    make_run(built, "exp-choice-llama")
    make_run(built, "exp-choice-gpt", mlp="gelu", norm="layernorm", pos="learned")
    llama = format_choices(built, "exp-choice-llama")
    assert [c["format"] for c in llama] == ["hf", "gguf", "llama2c", "weights"]
    assert all(c["why_not"] is None for c in llama)
    gpt = {c["format"]: c["why_not"] for c in format_choices(built, "exp-choice-gpt")}
    assert gpt["weights"] is None and all("mlp is 'gelu'" in gpt[f] for f in ("hf", "gguf", "llama2c"))


@pytest.mark.parametrize("args,reason", [
    (["--format", "hf", "--dtype", "f16"], "--dtype applies only to --format gguf, not hf"),
    (["--format", "gguf", "--dtype", "bf16"], "--dtype 'bf16' is not supported for gguf: expected one of f32, f16, q8_0"),
    (["--format", "llama2c", "--version", "2"], "--version 2 is not supported for llama2c: expected 0 or 1"),
    (["--format", "weights", "--version", "1"], "--version applies only to --format llama2c, not weights"),
])
def test_bad_options_are_one_line_errors_before_anything_is_written(built, tmp_path, capsys, args, reason):
    if not built.run_path("exp-opts").exists():
        make_run(built, "exp-opts")
    rc = main(["--workspace", str(built.root), "export", "exp-opts", "--to", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: {reason}\n"
    assert list(tmp_path.iterdir()) == []


def test_q8_0_needs_rows_of_whole_blocks(built, tmp_path):
    make_run(built, "exp-q8-odd", dim=48, n_heads=4, n_kv_heads=2)
    with pytest.raises(WorkbenchError, match="dim is 48 .*not a multiple of 32.*use f16 or f32"):
        export_run(built, "exp-q8-odd", tmp_path / "q", "gguf", dtype="q8_0")
    assert not (tmp_path / "q").exists()


# --- plain weights -------------------------------------------------------------------------

@pytest.mark.parametrize("tie", [True, False])
def test_weights_export_loads_back_strictly(built, tmp_path, tie):
    name = f"exp-w-{tie}"
    _, net = make_run(built, name, mlp="gelu", norm="layernorm", pos="learned", bias=True,
                      tie_embeddings=tie)
    assert main(["--workspace", str(built.root), "export", name, "--to", str(tmp_path / "w"),
                 "--format", "weights"]) == 0
    from safetensors.torch import load_file

    cfg = read_config(tmp_path / "w" / "config.yaml").model
    m = build_model(cfg)
    m.load_state_dict(load_file(str(tmp_path / "w" / "model.safetensors")))  # strict, as promised
    assert (m.lm_head.weight is m.tok_emb.weight) == tie  # still tied after loading
    x = torch.randint(0, 400, (1, 20))
    with torch.no_grad():
        assert torch.equal(m.eval()(x), net(x))
    assert (tmp_path / "w" / "tokenizer.model").is_file()


# --- the RoPE layout of the interleaved formats ----------------------------------------------

def test_interleaved_rows_rotate_neighbouring_pairs_as_we_rotate_halves():
    """q from interleave_heads(W), rotated pair by pair as run.c and llama.cpp do, equals our
    half-split rotation of q from W, with the same rows moved: the permutation is right."""
    from workbench.model.positions import RotaryPositions, apply_rotary

    H, D, C, T = 3, 8, 12, 5
    torch.manual_seed(0)
    W, x = torch.randn(H * D, C), torch.randn(T, C)
    rope = RotaryPositions(T, D, 10000.0).rotary(0, T)
    ours = apply_rotary((x @ W.T).view(1, T, H, D), rope).view(T, H * D)
    q = (x @ interleave_heads(W, H).T).view(T, H, D // 2, 2)
    cos, sin = rope[0].view(T, 1, D // 2), rope[1].view(T, 1, D // 2)
    theirs = torch.stack((q[..., 0] * cos - q[..., 1] * sin, q[..., 0] * sin + q[..., 1] * cos), -1)
    assert torch.allclose(interleave_heads(ours.T, H).T, theirs.reshape(T, H * D), atol=1e-6)
    assert not torch.allclose(ours, theirs.reshape(T, H * D), atol=1e-3)  # the order does differ


# --- llama2.c files ------------------------------------------------------------------------

def _floats(b: bytes, at: int, n: int) -> tuple[np.ndarray, int]:
    return np.frombuffer(b, dtype="<f4", count=n, offset=at), at + 4 * n


@pytest.mark.parametrize("tie", [True, False])
def test_llama2c_v0_and_v1_hold_the_same_tensors_in_their_orders(built, tmp_path, tie):
    name = f"exp-l2c-{tie}"
    _, net = make_run(built, name, seed=5, tie_embeddings=tie)
    c = net.config
    V, C, L, F, Hkv, D, S = c.vocab_size, c.dim, c.n_layers, c.ffn_dim, c.kv_heads, c.head_dim, c.max_seq_len
    v0 = export_run(built, name, tmp_path / "v0", "llama2c")
    v1 = export_run(built, name, tmp_path / "v1", "llama2c", version=1)
    assert v0["options"] == {"version": 0} and v1["options"] == {"version": 1}
    b0, b1 = ((tmp_path / v / "model.bin").read_bytes() for v in ("v0", "v1"))
    assert struct.unpack("<7i", b0[:28]) == (C, F, L, c.n_heads, Hkv, V if tie else -V, S)
    assert struct.unpack("<Ii7iB", b1[:37]) == (0x616B3432, 1, C, F, L, c.n_heads, Hkv, V, S, int(tie))
    assert b1[37:256] == bytes(219)
    sizes = {"emb": V * C, "an": C, "q": C * C, "k": Hkv * D * C, "v": Hkv * D * C, "o": C * C,
             "mn": C, "w1": F * C, "w2": C * F, "w3": F * C, "norm": C, "cos": S * D // 2,
             "sin": S * D // 2, "head": V * C}
    per_layer = ("an", "q", "k", "v", "o", "mn", "w1", "w2", "w3")
    order0 = ["emb", *per_layer, "norm", "cos", "sin"] + ([] if tie else ["head"])
    order1 = ["an", "mn", "norm", "emb", "q", "k", "v", "o", "w1", "w2", "w3"] + ([] if tie else ["head"])

    def parse(b, at, order):
        out = {}
        for key in order:
            n = sizes[key] * (L if key in per_layer else 1)
            out[key], at = _floats(b, at, n)
        assert at == len(b)  # nothing missing, nothing extra
        return out

    t0, t1 = parse(b0, 28, order0), parse(b1, 256, order1)
    assert all(np.array_equal(t0[k], t1[k]) for k in order1)
    sd = net.state_dict()
    assert np.array_equal(t0["emb"], sd["tok_emb.weight"].numpy().ravel())
    wk = sd["layers.0.attn.wqkv.weight"][c.n_heads * D:(c.n_heads + Hkv) * D] if "layers.0.attn.wqkv.weight" in sd \
        else sd["layers.0.attn.wk.weight"]
    assert np.array_equal(t0["k"][:sizes["k"]], interleave_heads(wk, Hkv).numpy().ravel())
    assert np.array_equal(t0["cos"], net.pos.cos.numpy().ravel())
    if not tie:
        assert np.array_equal(t0["head"], sd["lm_head.weight"].numpy().ravel())


def test_llama2c_tokenizer_bin_is_what_our_decoder_says(built, tmp_path):
    make_run(built, "exp-l2c-tok")
    export_run(built, "exp-l2c-tok", tmp_path / "t", "llama2c")
    from workbench.tokenizer.tokenizer import load_tokenizer

    tok = load_tokenizer(built, "tok")
    b = (tmp_path / "t" / "tokenizer.bin").read_bytes()
    (max_len,), at, pieces = struct.unpack_from("<i", b), 4, []
    while at < len(b):
        score, n = struct.unpack_from("<fi", b, at)
        pieces.append((b[at + 8:at + 8 + n], score))
        at += 8 + n
    assert len(pieces) == tok.vocab_size and max_len == max(len(p) for p, _ in pieces)
    assert [p for p, _ in pieces[:4]] == [" ⁇ ".encode(), b"\0", b"\0", b"\0"]  # unk, then controls print nothing
    assert pieces[4][0] == b"<0x00>" and pieces[259][0] == b"<0xFF>"
    the = tok.encode(" the")[0]
    assert pieces[the] == (b" the", tok.sp.get_score(the))
    normal = [i for i in range(260, tok.vocab_size)]
    assert all(pieces[i][0].decode() == tok.decode([i]) for i in normal)


# --- the export folder ---------------------------------------------------------------------

def test_export_folder_carries_a_marker(built, tmp_path):
    make_run(built, "exp-marker")
    out = export_run(built, "exp-marker", tmp_path / "m", "gguf", dtype="f16")
    m = read_marker(tmp_path / "m")
    assert m["format"] == "gguf" and m["options"] == {"dtype": "f16"} and m["run"] == "exp-marker"
    assert m["checkpoint"] == "step_000001" and m["created"] and m["files"] == out["files"] == ["model.gguf"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MARKER, "model.gguf"]


def test_force_replaces_only_an_earlier_export(built, tmp_path, capsys):
    make_run(built, "exp-force")
    ws = ["--workspace", str(built.root)]

    def export(dest, *extra):
        rc = main([*ws, "export", "exp-force", "--to", str(dest), "--format", "weights", *extra])
        return rc, capsys.readouterr()

    # someone's folder: refused, with or without --force, and left as it was
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("mine")
    for extra in ((), ("--force",)):
        rc, out = export(thesis, *extra)
        assert rc == 2 and out.err.count("\n") == 1 and str(thesis) in out.err
        assert "is not a workbench export" in out.err and "never replaced" in out.err
        assert sorted(p.name for p in thesis.iterdir()) == ["chapter1.tex"]
    # a file: refused the same way
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    for extra in ((), ("--force",)):
        rc, out = export(notes, *extra)
        assert rc == 2 and "is a file, not a folder" in out.err and notes.read_text() == "keep"
    # an earlier export: refused without --force, replaced with it
    dest = tmp_path / "dest"
    assert export(dest)[0] == 0
    first = read_marker(dest)["created"]
    rc, out = export(dest)
    assert rc == 2 and "already holds an export (weights of run 'exp-force')" in out.err and "--force" in out.err
    rc, out = export(dest, "--force", "--json")
    assert rc == 0 and json.loads(out.out)["checkpoint"] == "step_000001" and read_marker(dest)["created"] >= first
    # an earlier export someone has put their own file in: never replaced
    (dest / "my-notes.md").write_text("mine")
    rc, out = export(dest, "--force")
    assert rc == 2 and "'my-notes.md'" in out.err and (dest / "my-notes.md").read_text() == "mine"
    # an empty folder is fine without --force
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(empty)[0] == 0 and (empty / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "empty", "notes.txt", "thesis"]  # no temp folders


@pytest.mark.parametrize("fmt", ["gguf", "llama2c", "hf"])
def test_a_failed_export_leaves_nothing_half_written(built, tmp_path, monkeypatch, fmt):
    import workbench.export as export

    if not built.run_path("exp-fail").exists():
        make_run(built, "exp-fail")
    module = export._MODULES[fmt]
    real = module.write

    def fail_half_way(job, tmp):
        real(job, tmp)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write", fail_half_way)
    with pytest.raises(WorkbenchError, match="cannot write the export to .*No space left on device"):
        export_run(built, "exp-fail", tmp_path / "new", fmt)
    assert list(tmp_path.iterdir()) == []
    # replacing an earlier export: the earlier one survives the failure
    monkeypatch.setattr(module, "write", real)
    export_run(built, "exp-fail", tmp_path / "old", fmt)
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    monkeypatch.setattr(module, "write", fail_half_way)
    with pytest.raises(WorkbenchError):
        export_run(built, "exp-fail", tmp_path / "old", fmt, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_cli_export_prints_what_it_wrote(built, tmp_path, capsys):
    make_run(built, "exp-cli")
    assert main(["--workspace", str(built.root), "export", "exp-cli", "--to", str(tmp_path / "g"),
                 "--format", "gguf", "--dtype", "q8_0"]) == 0
    assert capsys.readouterr().out == (f"exported exp-cli @ step_000001 as gguf, dtype q8_0 to "
                                       f"{tmp_path / 'g'}: model.gguf\n")


def test_cli_hf_export_loads_with_the_auto_classes_as_the_readme_shows(built, tmp_path, capsys):
    """`workbench export RUN --format hf`, then exactly the README's two lines: the Auto classes
    load the folder, the tokenizer encodes as ours does, and greedy text equals ours."""
    tf = pytest.importorskip("transformers")
    make_run(built, "exp-hf-cli", seed=4)
    dest = tmp_path / "exported" / "hf"
    assert main(["--workspace", str(built.root), "export", "exp-hf-cli", "--to", str(dest), "--format", "hf"]) == 0
    assert "exported exp-hf-cli @ step_000001 as hf" in capsys.readouterr().out
    model, tok = tf.AutoModelForCausalLM.from_pretrained(str(dest)), tf.AutoTokenizer.from_pretrained(str(dest))
    from workbench.generation.generate import load_for_generation, token_loop
    from workbench.generation.sampling import SamplingParams

    ours, our_tok, *_ = load_for_generation(built, "exp-hf-cli", device="cpu")
    text = "Once upon a time Lily"
    ids = our_tok.encode(text)
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        theirs = model.generate(torch.tensor([[our_tok.bos_id, *ids]]), max_new_tokens=12, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[0, len(ids) + 1:].tolist()
    mine = [s.id for s in token_loop(ours, [our_tok.bos_id, *ids],
                                     SamplingParams(max_tokens=12, temperature=0, stop_at_eos=False))]
    assert mine == theirs
