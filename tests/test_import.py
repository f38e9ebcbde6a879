"""Import, the inverse of export: every export format read back by ``workbench import`` gives
the run's logits (within the format's precision) and its greedy text; the imported run works
like any other (generate, eval on a file, trace, export again, train --init-from); files made
by other programs import too, checked against those programs' own forward passes (llama2.c's
``model.py`` from ``../shared/peers`` or ``$WORKBENCH_PEERS``, transformers' ``LlamaForCausalLM``) with a Llama-style
tokenizer (dummy prefix, no PAD); and a foreign or broken source is refused in one line,
writing nothing.

Runs: ``tied`` (tied head, GQA 4/2) and ``untied`` (separate head, MHA), trained 200 steps on
structured stories (so greedy text is varied and a wrong row order changes it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_debug_run, write_story_file
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.export.importer import import_model
from workbench.runs.folder import get_run
from workbench.runs.load import load_run_model
from workbench.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
PEER_MODEL = Path(os.environ.get("WORKBENCH_PEERS") or REPO.parent / "shared" / "peers") / "llama2.c" / "model.py"
RUNS = {"tied": dict(tie_embeddings=True, n_kv_heads=2), "untied": dict(tie_embeddings=False, n_kv_heads=4)}
# export arguments per format, and how far the imported logits may be from the run's (relative
# to the largest logit): f32 formats hold the weights exactly; f16 and q8_0 round the matrices
# (measured: 6e-4 and 1.5e-2 here), and the imported logits are exactly those of the run's
# weights rounded so (``rounded_logits``)
FORMATS = {"hf": ([], 1e-6), "gguf-f32": (["--format", "gguf", "--dtype", "f32"], 1e-6),
           "gguf-f16": (["--format", "gguf", "--dtype", "f16"], 5e-3),
           "gguf-q8_0": (["--format", "gguf", "--dtype", "q8_0"], 5e-2),
           "llama2c-v0": (["--format", "llama2c", "--version", "0"], 1e-6),
           "llama2c-v1": (["--format", "llama2c", "--version", "1"], 1e-6)}
N = 40
PROMPTS = ("", "Once upon a time, Lily")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    from workbench.tokenizer.build import build_tokenizer
    from workbench.tokenizer.tokenizer import TokenizerSettings

    root = tmp_path_factory.mktemp("imports")
    w = Workspace.at(root / "ws")
    stories = write_story_file(root / "stories.txt", 300)
    build_tokenizer(w, "tok", TokenizerSettings(vocab_size=400, sample_mb=1, data=str(stories)))
    for name, model in RUNS.items():
        train_debug_run(w, name, stories, **model)
    return w


@pytest.fixture(scope="module")
def relu2_run(ws, tmp_path_factory) -> str:
    """A run of the planner's ReLU² MLP, which of the Llama formats only hf holds."""
    stories = write_story_file(tmp_path_factory.mktemp("relu2") / "stories.txt", 300)
    train_debug_run(ws, "relu2", stories, mlp="relu2", tie_embeddings=True, n_kv_heads=2)
    return "relu2"


def test_a_relu2_run_round_trips_through_hf(ws, tmp_path, capsys, relu2_run):
    """hf holds ReLU² exactly (hidden_act relu, gate_proj = up_proj): imported back, the same
    logits and greedy text; a folder whose gate and up differ is refused naming the layer."""
    from safetensors.torch import load_file, save_file

    src = exported(ws, relu2_run, "hf", tmp_path, capsys)
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["hidden_act"] == "relu"
    w = load_file(str(src / "model.safetensors"))
    assert torch.equal(w["model.layers.0.mlp.gate_proj.weight"], w["model.layers.0.mlp.up_proj.weight"])
    import_cli(ws, src, "relu2-back", capsys)
    assert get_run(ws, "relu2-back").raw_config()["model"]["mlp"] == "relu2"
    x = ids()
    a, b = logits(ws, relu2_run, x), logits(ws, "relu2-back", x)
    assert (a - b).abs().max().item() < 1e-6 * a.abs().max().item()
    for prompt in PROMPTS:
        assert greedy(ws, "relu2-back", capsys, prompt)["ids"] == greedy(ws, relu2_run, capsys, prompt)["ids"]
    w["model.layers.1.mlp.up_proj.weight"] = w["model.layers.1.mlp.up_proj.weight"] * 1.5
    save_file(w, str(src / "model.safetensors"), metadata={"format": "pt"})
    assert "layer 1's gate_proj and up_proj differ" in _refused(ws, capsys, src)


@pytest.fixture(scope="module")
def stories(ws) -> Path:
    return ws.root.parent / "stories.txt"


def cli(ws, *args, capsys, ok: bool = True) -> str:
    code = main(["--workspace", str(ws.root), *args])
    out, err = capsys.readouterr()
    if ok:
        assert code == 0, err
        return out
    assert code != 0, out
    return err


def greedy(ws, run, capsys, prompt: str = "") -> dict:
    out = json.loads(cli(ws, "generate", run, "--prompt", prompt, "--temperature", "0", "--max-tokens", str(N),
                         "--json", capsys=capsys))
    return out["samples"][0]


def logits(ws, run, x) -> torch.Tensor:
    model = load_run_model(get_run(ws, run))[0]
    with torch.no_grad():
        return model(x)


def rounded_logits(ws, run, dtype, x) -> torch.Tensor:
    """The run's logits with every matrix rounded as a GGUF of ``dtype`` stores it (f16, or q8_0
    through the gguf package's own quantizer; norms stay f32). Rounding is per row, so our fused
    and llama.cpp's split, reordered rows round alike."""
    from gguf import GGMLQuantizationType, quants

    model = load_run_model(get_run(ws, run))[0]
    with torch.no_grad():
        for prm in model.parameters():
            if prm.ndim == 2:
                w = prm.numpy()
                w = w.astype(np.float16).astype(np.float32) if dtype == "f16" else quants.dequantize(
                    quants.quantize(w, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)
                prm.copy_(torch.from_numpy(w))
        return model(x)


def ids(seed=0, vocab=400, T=64) -> torch.Tensor:
    return torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(seed))


def exported(ws, run, fmt, tmp_path, capsys) -> Path:
    """Export ``run`` as ``fmt`` and return what ``workbench import`` is given."""
    args, _ = FORMATS[fmt]
    cli(ws, "export", run, *args, "--to", str(tmp_path / fmt), capsys=capsys)
    d = tmp_path / fmt
    return d / "model.gguf" if "gguf" in fmt else d / "model.bin" if "llama2c" in fmt else d


def import_cli(ws, source, name, capsys, *more) -> str:
    return cli(ws, "import", str(source), "--name", name, *more, capsys=capsys)


def snapshot(ws) -> dict:
    """Every entry under the workspace's runs and tokenizers, hidden temporaries included."""
    return {d: sorted(p.name for p in (ws.root / d).iterdir()) if (ws.root / d).is_dir() else []
            for d in ("trained_models", "tokenizers")}


# --- round trips: export -> import gives the same model ----------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("run", list(RUNS))
def test_every_export_imports_back_with_the_same_logits_and_greedy_text(ws, tmp_path, capsys, run, fmt):
    name = f"back-{run}-{fmt}"
    src = exported(ws, run, fmt, tmp_path, capsys)
    # --tokenizer: the file, or (v0) the folder holding it
    tok_args = ["--tokenizer", str(ws.run_path(run) / "tokenizer" / ("" if fmt.endswith("v0") else "tokenizer.model"))
                ] if "llama2c" in fmt else []
    out = import_cli(ws, src, name, capsys, *tok_args)
    assert out.startswith(f"imported {src} (") and f"as run {name} @ step_000000" in out
    x = ids()
    a, b = logits(ws, run, x), logits(ws, name, x)
    tol = FORMATS[fmt][1]
    assert (a - b).abs().max().item() < tol * a.abs().max().item(), fmt
    if fmt in ("gguf-f16", "gguf-q8_0"):  # within the format's precision: exactly its rounding
        r = rounded_logits(ws, run, fmt.split("-")[1], x)
        assert (r - b).abs().max().item() < 1e-6 * r.abs().max().item(), fmt
    for prompt in PROMPTS:
        mine, theirs = greedy(ws, run, capsys, prompt), greedy(ws, name, capsys, prompt)
        assert theirs["ids"] == mine["ids"] and theirs["text"] == mine["text"], (fmt, prompt)
    assert len(set(mine["ids"])) > 10  # the model says something: a wrong layout would change it
    raw = get_run(ws, name).raw_config()
    assert raw["imported_from"]["format"] == fmt.split("-")[0]
    assert raw["imported_from"]["source"] == str(src.resolve())
    assert get_run(ws, name).status()["state"] == "imported"
    if "llama2c" in fmt:
        assert raw["imported_from"]["version"] == int(fmt[-1])
    if "gguf" in fmt:
        assert raw["imported_from"]["tensor_types"] == (["f32"] if fmt.endswith("f32") else ["f32", fmt.split("-")[-1]])
    # a GGUF vocabulary is rebuilt: it must encode and decode as the run's own tokenizer
    ours, theirs = get_run(ws, run).load_tokenizer(), get_run(ws, name).load_tokenizer()
    for text in ("Once upon a time, Lily saw 日本 😀 and  two spaces\n", "123 steps.", " x", "\n\n"):
        assert theirs.encode(text) == ours.encode(text)
        assert theirs.decode(ours.encode(text)) == text
    # the tokenizer in tokenizers/: the run's own (hf, llama2c: the same file) or, rebuilt from a
    # GGUF vocabulary, a new one under the first such import's name (the same file every time)
    from workbench.tokenizer.tokenizer import load_tokenizer

    tname = raw["data"]["tokenizer"]
    assert tname == "tok" if "gguf" not in fmt else tname.startswith("back-")
    assert load_tokenizer(ws, tname).sha256 == raw["data"]["tokenizer_sha256"] == theirs.sha256


def test_an_imported_run_is_like_any_other(ws, tmp_path, capsys, stories):
    """generate is above; here: runs list, eval on a file, trace, export again, compare, train
    --init-from (its first evaluation is the origin's own), and a resume refused with the way."""
    from workbench.training.evaluate import EvalRequest, evaluate_run

    src = exported(ws, "untied", "gguf-f32", tmp_path, capsys)
    import_cli(ws, src, "imp", capsys)
    listed = json.loads(cli(ws, "runs", "list", "--json", capsys=capsys))
    row = next(r for r in listed if r["name"] == "imp")
    assert row["status"] == "imported" and not row.get("problem")
    # eval on your text: the same loss as the origin's on the same file
    a = json.loads(cli(ws, "eval", "imp", "--data", str(stories), "--json", capsys=capsys))
    b = json.loads(cli(ws, "eval", "untied", "--data", str(stories), "--json", capsys=capsys))
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # its own data: there is none, and the refusal says what to do
    err = cli(ws, "eval", "imp", capsys=capsys, ok=False)
    assert "was not trained here (it was imported)" in err and "--data" in err and len(err.strip().splitlines()) == 1
    # trace shows its real shapes
    trace = cli(ws, "trace", "--run", "imp", "--text", "Once upon a time", "--depth", "2", capsys=capsys)
    assert "400" in trace and "32" in trace
    # export again, and import that: still the same model
    cli(ws, "export", "imp", "--format", "hf", "--to", str(tmp_path / "again"), capsys=capsys)
    import_cli(ws, tmp_path / "again", "imp2", capsys)
    x = ids(1)
    assert (logits(ws, "imp", x) - logits(ws, "imp2", x)).abs().max().item() < 1e-4
    cli(ws, "runs", "compare", "imp", "untied", capsys=capsys)
    # resume: there is no training to resume, and the refusal names the way to train from it
    err = cli(ws, "train", "--resume", "imp", capsys=capsys, ok=False)
    assert "was imported, not trained here" in err and "--init-from imp" in err
    # train from it: its tokenizer (rebuilt from the GGUF vocabulary) is in tokenizers/ under its name
    batch = get_run(ws, "untied").config().train.batch_size
    cli(ws, "train", "--init-from", "imp", "--data", str(stories), "--name", "ft", "--set", "train.max_steps=2",
        "--set", f"train.batch_size={batch}", "--set", "train.eval_batches=2", "--set", "train.precision=fp32",
        capsys=capsys)
    ft = get_run(ws, "ft")
    assert ft.raw_config()["init_from"] == {"run": "imp", "checkpoint": "step_000000"}
    first = ft.metrics()[0]
    assert first["kind"] == "eval" and first["step"] == 0
    want = evaluate_run(ws, EvalRequest("untied", batches=2, precision="fp32"))
    assert first["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)


# --- files other programs made ---------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_tok(tmp_path_factory) -> Path:
    """A Llama-style sentencepiece model: dummy prefix, identity normalisation, byte fallback,
    no PAD (unk 0, bos 1, eos 2, bytes at 3..258), 400 pieces."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("llamatok")
    text = write_story_file(d / "stories.txt", 300)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(d / "tokenizer"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, pad_id=-1, split_digits=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    return d / "tokenizer.model"


def _llama2c_module():
    if not PEER_MODEL.is_file():
        pytest.skip(f"llama2.c's model.py is not at {PEER_MODEL}")
    spec = importlib.util.spec_from_file_location("llama2c_model", PEER_MODEL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["llama2c_model"] = mod
    spec.loader.exec_module(mod)
    return mod


def llama2c_file(model, path: Path, version: int) -> None:
    """model.bin as llama2.c's export.py lays out version 0 (legacy) and 1, written here from
    llama2.c's own Transformer (not through workbench's writer)."""
    p, L = model.params, model.layers
    tied = model.output.weight is model.tok_embeddings.weight
    dims = (p.dim, L[0].feed_forward.w1.weight.shape[0], p.n_layers, p.n_heads, p.n_kv_heads or p.n_heads)
    attn = lambda n: [getattr(x.attention, n).weight for x in L]  # noqa: E731
    ffn = lambda n: [getattr(x.feed_forward, n).weight for x in L]  # noqa: E731
    norms = [x.attention_norm.weight for x in L], [x.ffn_norm.weight for x in L]
    with open(path, "wb") as f:
        if version == 0:
            f.write(struct.pack("7i", *dims, p.vocab_size if tied else -p.vocab_size, p.max_seq_len))
            ws = [model.tok_embeddings.weight, *norms[0], *attn("wq"), *attn("wk"), *attn("wv"), *attn("wo"),
                  *norms[1], *ffn("w1"), *ffn("w2"), *ffn("w3"), model.norm.weight,
                  model.freqs_cos[:p.max_seq_len], model.freqs_sin[:p.max_seq_len]]
        else:
            head = struct.pack("I", 0x616B3432) + struct.pack("i", 1) + struct.pack("7i", *dims, p.vocab_size,
                                                                                      p.max_seq_len)
            head += struct.pack("B", int(tied))
            f.write(head + b"\0" * (256 - len(head)))
            ws = [*norms[0], *norms[1], model.norm.weight, model.tok_embeddings.weight, *attn("wq"), *attn("wk"),
                  *attn("wv"), *attn("wo"), *ffn("w1"), *ffn("w2"), *ffn("w3")]
        if not tied:
            ws.append(model.output.weight)
        for w in ws:
            f.write(w.detach().float().numpy().astype("<f4").tobytes())


def llama2c_model(tied: bool, seed: int = 0):
    mod = _llama2c_module()
    torch.manual_seed(seed)
    m = mod.Transformer(mod.ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400,
                                      hidden_dim=96, max_seq_len=64))
    if not tied:
        m.output.weight = torch.nn.Parameter(m.tok_embeddings.weight.detach().clone())
    with torch.no_grad():  # weights far from llama2.c's tiny init, so logits are spread and rows matter
        for prm in m.parameters():
            prm.add_(torch.randn_like(prm) * 0.3)
    return m.eval()


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_a_llama2c_model_bin_imports_with_llama2cs_own_logits(ws, tmp_path, capsys, llama_tok, version, tied):
    theirs = llama2c_model(tied)
    llama2c_file(theirs, tmp_path / "model.bin", version)
    name = f"l2c-{version}-{'tied' if tied else 'untied'}"
    import_cli(ws, tmp_path / "model.bin", name, capsys, "--tokenizer", str(llama_tok))
    x = ids(2)
    with torch.no_grad():
        want = theirs(x, targets=x)  # with targets llama2.c returns every position's logits
    got = logits(ws, name, x)
    assert (want - got).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    cfg = get_run(ws, name).config().model
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim, cfg.tie_embeddings) == (
        64, 2, 4, 2, 96, tied)
    # the Llama-style tokenizer works as the run's: dummy prefix, no PAD, generation from BOS
    tok = get_run(ws, name).load_tokenizer()
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, -1)
    assert tok.normalizer["add_dummy_prefix"] and tok.decode(tok.encode("Once upon a time")) == "Once upon a time"
    s = greedy(ws, name, capsys, "Once upon a time")
    assert s["prompt_ids"][:1] == [1] and 0 < len(s["ids"]) <= N


def test_a_llama_style_tokenizer_round_trips_through_gguf_and_trains(ws, tmp_path, capsys, llama_tok, stories):
    """A foreign tokenizer (dummy prefix, no PAD) through everything that reads a run's tokenizer:
    export to GGUF (its space prefix written as it is), import (rebuilt from the vocabulary),
    llama.cpp's tokenizer where it is installed, data prepare and train --init-from."""
    llama2c_file(llama2c_model(True, seed=1), tmp_path / "model.bin", 1)
    import_cli(ws, tmp_path / "model.bin", "fl", capsys, "--tokenizer", str(llama_tok))
    cli(ws, "export", "fl", "--format", "gguf", "--to", str(tmp_path / "g"), capsys=capsys)
    import_cli(ws, tmp_path / "g" / "model.gguf", "fl-back", capsys)
    x = ids(3)
    assert (logits(ws, "fl", x) - logits(ws, "fl-back", x)).abs().max().item() < 1e-4
    a, b = get_run(ws, "fl").load_tokenizer(), get_run(ws, "fl-back").load_tokenizer()
    texts = ["Once upon a time, Lily saw 日本 😀 and  two spaces\n", "123 steps.", " x", "a\n\nb"]
    for text in texts:
        assert b.encode(text) == a.encode(text) and b.decode(a.encode(text)) == a.decode(a.encode(text))
    if importlib.util.find_spec("llama_cpp") is not None:  # llama.cpp itself reads the vocabulary so too
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(tmp_path / "g" / "model.gguf"), vocab_only=True, verbose=False)
        try:
            for text in texts:
                assert llm.tokenize(text.encode(), add_bos=False) == b.encode(text), text
        finally:
            llm.close()
    cli(ws, "train", "--init-from", "fl-back", "--data", str(stories), "--name", "fl-ft", "--set",
        "train.max_steps=2", "--set", "train.batch_size=4", "--set", "train.eval_batches=1", capsys=capsys)
    assert get_run(ws, "fl-ft").status()["state"] == "finished"


def test_streamed_text_of_a_llama_style_tokenizer_is_its_whole_decode(llama_tok):
    """A dummy-prefix tokenizer drops the first piece's space in decode; streaming must keep the
    spaces of every later piece, so the deltas still add up to decode(all ids)."""
    import random

    from workbench.generation.streaming import TextDeltas
    from workbench.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(llama_tok)
    rng = random.Random(0)
    cases = [tok.encode("Once upon a time, Lily saw 日本 😀"), [2, *tok.encode(" two  spaces")],
             [tok.sp.piece_to_id("<0x20>"), *tok.encode("x y")]]
    cases += [[rng.randrange(tok.vocab_size) for _ in range(30)] for _ in range(200)]
    for ids in cases:
        d = TextDeltas(tok.decode, tok.decode_after)
        assert "".join(d.push(i) for i in ids) + d.flush() == tok.decode(ids), ids


def test_a_run_with_a_llama_style_tokenizer_trains_and_runs_in_run_c(ws, tmp_path, capsys, llama_tok, stories):
    """Trained here with a foreign tokenizer (dummy prefix, no PAD) in tokenizers/, then exported
    to llama2.c: run.c prints our greedy text (its tokenizer.bin keeps each piece's space, which
    run.c takes off after BOS as sentencepiece does), and the model.bin imports back."""
    import subprocess

    from workbench.config.schema import load_config
    from workbench.training.trainer import Trainer

    run_c = PEER_MODEL.parent / "run.c"
    cc = shutil.which("gcc") or shutil.which("cc")
    if not run_c.is_file() or cc is None:
        pytest.skip("needs llama2.c's run.c and a C compiler")
    exe = tmp_path / "run"
    subprocess.run([cc, "-O3", "-o", str(exe), str(run_c), "-lm"], check=True, capture_output=True, timeout=120)
    (ws.root / "tokenizers" / "llamatok").mkdir(parents=True, exist_ok=True)
    shutil.copy(llama_tok, ws.root / "tokenizers" / "llamatok" / "tokenizer.model")
    cfg = load_config("debug")
    cfg.model = cfg.model.replace(vocab_size=400)
    cfg.train = cfg.train.replace(max_steps=200, warmup_steps=5, eval_interval=200, eval_batches=2, log_interval=50,
                                  checkpoint_interval=200, num_threads=1, seed=0)
    assert Trainer.new(ws, cfg, "llamatok", str(stories), name="lt").run()["state"] == "finished"
    cli(ws, "export", "lt", "--format", "llama2c", "--to", str(tmp_path / "c"), capsys=capsys)
    ours = cli(ws, "generate", "lt", "--prompt", "", "--temperature", "0", "--max-tokens", str(N), capsys=capsys)
    p = subprocess.run([str(exe), str(tmp_path / "c" / "model.bin"), "-z", str(tmp_path / "c" / "tokenizer.bin"),
                        "-t", "0", "-n", str(N), "-i", ""], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == ours and ours.count(" ") > 10
    import_cli(ws, tmp_path / "c" / "model.bin", "lt-back", capsys, "--tokenizer", str(llama_tok))
    x = ids(5)
    assert (logits(ws, "lt", x) - logits(ws, "lt-back", x)).abs().max().item() < 1e-5


def hf_folder(path: Path, tok: Path, tied: bool, dtype=torch.float32, **save) -> torch.nn.Module:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-6, rope_theta=5000.0, tie_word_embeddings=tied, bos_token_id=1,
                         eos_token_id=2)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.3)
    model.to(dtype).save_pretrained(str(path), **save)
    shutil.copy(tok, path / "tokenizer.model")
    # the oracle is what is on disk, read by transformers in float32 (its RoPE tables computed anew)
    return tf.LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


@pytest.mark.parametrize("case", ["tied", "untied", "bf16", "pytorch_bin", "sharded"])
def test_a_transformers_llama_folder_imports_with_its_own_logits(ws, tmp_path, capsys, llama_tok, case):
    save = {"safe_serialization": False} if case == "pytorch_bin" else {"max_shard_size": "100KB"} \
        if case == "sharded" else {}
    theirs = hf_folder(tmp_path / "hf", llama_tok, case == "tied", torch.bfloat16 if case == "bf16" else torch.float32,
                       **save)
    if case == "sharded":
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    import_cli(ws, tmp_path / "hf", f"hf-{case}", capsys)
    x = ids(4)
    with torch.no_grad():
        want = theirs(input_ids=x).logits
    got = logits(ws, f"hf-{case}", x)
    assert (want - got).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    cfg = get_run(ws, f"hf-{case}").config().model
    assert (cfg.norm_eps, cfg.rope_theta, cfg.tie_embeddings) == (1e-6, 5000.0, case == "tied")


# --- refusals: one line, a non-zero exit, nothing written -------------------------------------


def _refused(ws, capsys, source, *more, name="bad") -> str:
    before = snapshot(ws)
    err = cli(ws, "import", str(source), "--name", name, *more, capsys=capsys, ok=False)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert snapshot(ws) == before  # no run, no tokenizer, no temporary left behind
    return err


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize("fmt", ["gguf-f16", "llama2c-v0", "llama2c-v1"])
def test_a_truncated_file_is_refused(ws, tmp_path, capsys, fmt):
    src = _cut(exported(ws, "tied", fmt, tmp_path, capsys), 0.6)
    more = ["--tokenizer", str(ws.run_path("tied") / "tokenizer")] if "llama2c" in fmt else []
    err = _refused(ws, capsys, src, *more)
    assert "truncated" in err and "nothing was written" in err


def test_wrong_magic_is_refused_as_another_kind_of_file(ws, tmp_path, capsys):
    src = exported(ws, "tied", "gguf-f16", tmp_path, capsys)
    src.write_bytes(b"GGUX" + src.read_bytes()[4:])
    err = _refused(ws, capsys, src)
    assert "is not a model file this import reads: not GGUF (magic 'GGUF')" in err
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    assert "is only 5 bytes long" in _refused(ws, capsys, junk)


def test_an_unknown_architecture_is_refused(ws, tmp_path, capsys, llama_tok):
    src = exported(ws, "tied", "gguf-f32", tmp_path, capsys)
    src.write_bytes(src.read_bytes().replace(b"llama", b"qwen2"))
    assert "general.architecture is 'qwen2'; workbench imports the 'llama' architecture" in _refused(ws, capsys, src)
    folder = exported(ws, "tied", "hf", tmp_path, capsys)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (folder / "config.json").write_text(json.dumps(cfg))
    assert "architecture [\"MistralForCausalLM\"] is not a Llama" in _refused(ws, capsys, folder)


@pytest.mark.parametrize("change,said", [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling is {\"rope_type\": \"linear\", "
                                                              "\"factor\": 2.0} (workbench's RoPE has no scaling)"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu' (workbench reads silu (SwiGLU), or relu with gate_proj = "
                             "up_proj (its ReLU² MLP))"),
    ({"attention_bias": True}, "attention_bias is true (workbench's Llama has no bias terms)"),
    ({"head_dim": 16}, "head_dim is 16 (workbench's head size is hidden_size / num_attention_heads = 8)"),
    ({"sliding_window": 4096}, "sliding_window is 4096 (a setting this importer does not know"),
    ({"num_attention_heads": 3, "head_dim": None}, "config.json describes a model workbench cannot build: "
                                                   "model.n_heads = 3 is not allowed: it must divide model.dim = 32"),
])
def test_an_hf_config_the_model_cannot_express_is_refused_naming_the_field(ws, tmp_path, capsys, change, said):
    folder = exported(ws, "tied", "hf", tmp_path, capsys)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg.update(change)
    (folder / "config.json").write_text(json.dumps(cfg))
    assert said in _refused(ws, capsys, folder)


def test_a_vocab_mismatch_between_weights_and_tokenizer_is_refused(ws, tmp_path, capsys, llama_tok):
    import sentencepiece as spm

    d = tmp_path / "small"
    d.mkdir()
    spm.SentencePieceTrainer.train(input=str(write_story_file(d / "s.txt", 50)), model_prefix=str(d / "t"),
                                   vocab_size=360, model_type="bpe", byte_fallback=True, minloglevel=2)
    src = exported(ws, "tied", "llama2c-v0", tmp_path, capsys)
    err = _refused(ws, capsys, src, "--tokenizer", str(d / "t.model"))
    assert "the weights are for 400 token ids but the tokenizer has 360 pieces" in err
    folder = exported(ws, "untied", "hf", tmp_path, capsys)
    shutil.copy(d / "t.model", folder / "tokenizer.model")
    assert "the weights are for 400 token ids but the tokenizer has 360 pieces" in _refused(ws, capsys, folder)


def test_other_refusals(ws, tmp_path, capsys, monkeypatch):
    src = exported(ws, "tied", "llama2c-v1", tmp_path, capsys)
    assert "holds no vocabulary: give the sentencepiece model it was trained with, --tokenizer" in \
        _refused(ws, capsys, src)
    folder = exported(ws, "tied", "hf", tmp_path, capsys)
    (folder / "tokenizer.model").unlink()
    assert "no sentencepiece tokenizer.model" in _refused(ws, capsys, folder)
    assert "no such file or folder" in _refused(ws, capsys, tmp_path / "nothing.gguf")
    # a hub id offline: one clear line, at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _refused(ws, capsys, "someone/tiny-llama")
    assert "the hub model cannot be downloaded: HF_HUB_OFFLINE is set" in err
    # a run of that name already exists
    assert "run 'tied' already exists" in _refused(ws, capsys, folder, name="tied")
    # a weight that is not finite
    from safetensors.torch import load_file, save_file

    folder = exported(ws, "untied", "hf", tmp_path / "nan", capsys)
    sd = load_file(str(folder / "model.safetensors"))
    sd["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(sd, str(folder / "model.safetensors"))
    assert "1 of 3,072 values of layers.1.mlp.w3.weight are NaN or infinite" in _refused(ws, capsys, folder)


def test_a_gguf_vocabulary_sentencepiece_cannot_hold_is_refused(ws, tmp_path, capsys, monkeypatch):
    import gguf

    real = gguf.GGUFWriter.add_tokenizer_model
    monkeypatch.setattr(gguf.GGUFWriter, "add_tokenizer_model", lambda self, m: real(self, "gpt2"))
    src = exported(ws, "tied", "gguf-f32", tmp_path, capsys)
    assert "tokenizer.ggml.model = 'gpt2'; only 'llama' (sentencepiece)" in _refused(ws, capsys, src)
    monkeypatch.setattr(gguf.GGUFWriter, "add_tokenizer_model", real)
    # a vocabulary whose normaliser sentencepiece would apply and llama.cpp does not: they part
    monkeypatch.setattr(gguf.GGUFWriter, "add_remove_extra_whitespaces",
                        lambda self, v: self.add_bool(gguf.Keys.Tokenizer.REMOVE_EXTRA_WS, True))
    src = exported(ws, "tied", "gguf-f32", tmp_path / "ws2", capsys)
    err = _refused(ws, capsys, src)
    assert "rebuilt as a sentencepiece model encodes" in err and "otherwise than the file's vocabulary does" in err


def test_the_engine_function_refuses_before_writing(ws, tmp_path, capsys):
    folder = exported(ws, "tied", "hf", tmp_path, capsys)
    before = snapshot(ws)
    with pytest.raises(WorkbenchError, match="--tokenizer is for a llama2.c model.bin; a transformers folder"):
        import_model(ws, folder, "x", tokenizer=ws.run_path("tied") / "tokenizer")
    assert snapshot(ws) == before


def test_reference_tokenizer_agrees_with_llama_cpp(ws, tmp_path, capsys):
    """The restated llama.cpp tokenizer (``gguf_vocab.reference_encode``) is what llama.cpp does."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the `llama` extra (llama-cpp-python)")
    gguf = pytest.importorskip("gguf")
    from workbench.export.gguf_file import _fields
    from workbench.export.gguf_vocab import reference_encode, samples, vocab_from_fields

    src = exported(ws, "tied", "gguf-f32", tmp_path, capsys)
    v = vocab_from_fields(_fields(gguf.GGUFReader(str(src))))
    llm = llama_cpp.Llama(model_path=str(src), vocab_only=True, verbose=False)
    try:
        for text in samples(v):
            assert reference_encode(v, text) == llm.tokenize(text.encode(), add_bos=False), text[:40]
    finally:
        llm.close()
    assert np.all(np.asarray(v.types[4:260]) == 6)
