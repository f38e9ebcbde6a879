"""Each export format proven by its real client producing our greedy text, on models the real
engine trained here (a tokenizer built in the test, 200 steps on structured stories, so the
greedy text is varied and a wrong q/k row order or head layout changes it):

* llama2c: llama2.c's own ``run.c`` (from ``../shared/peers``, compiled into a temp dir);
* gguf: llama.cpp through ``llama-cpp-python`` (the ``llama`` extra; skipped without it), and
  a ``gguf.GGUFReader`` round trip of every key and tensor (runs in CI);
* hf: transformers ``generate(do_sample=False)`` from the exported folder.

Runs: ``tied`` (tied head, GQA 4/2) and ``untied`` (separate head, MHA), so both of run.c's
shared_weights cases and its kv-head sharing are covered.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import train_debug_run, write_story_file
from workbench.cli import main
from workbench.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
PEER_RUN_C = REPO.parent / "shared" / "peers" / "llama2.c" / "run.c"
N = 40
RUNS = {"tied": dict(tie_embeddings=True, n_kv_heads=2), "untied": dict(tie_embeddings=False, n_kv_heads=4)}
# the planner's ReLU² MLP: of the Llama formats only hf holds it (relu(z)·z = relu(z)², a gated MLP
# whose gate and up are one matrix)
HF_ONLY = {"relu2": dict(tie_embeddings=True, n_kv_heads=2, mlp="relu2")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Workspace:
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    root = tmp_path_factory.mktemp("clients")
    ws = Workspace.at(root / "ws")
    corpus_dir = write_story_file(root / "stories.txt", 300)
    build_tokenizer(ws, "tok", TokenizerSettings(vocab_size=400, sample_mb=1, data=str(corpus_dir)))
    for name, model in {**RUNS, **HF_ONLY}.items():
        train_debug_run(ws, name, corpus_dir, eval_batches=1, **model)
    return ws


def cli(ws, *args, capsys) -> str:
    assert main(["--workspace", str(ws.root), *args]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def greedy(ws, run, capsys, prompt: str = "") -> dict:
    """workbench's own greedy sample: the CLI's JSON (ids and text) for ``prompt``."""
    out = json.loads(cli(ws, "generate", run, "--prompt", prompt, "--temperature", "0",
                         "--max-tokens", str(N), "--json", capsys=capsys))
    s = out["samples"][0]
    assert len(set(s["ids"])) > 10, s["text"]  # a model that says something, not one token again
    return s


def test_an_empty_prompt_starts_from_bos_alone(trained, capsys):
    s = greedy(trained, "tied", capsys)
    assert s["prompt_ids"] == [1] and s["text"].startswith("Once upon a time")
    # no --prompt at all is the same, as run.c without -i
    plain = cli(trained, "generate", "tied", "--temperature", "0", "--max-tokens", str(N), capsys=capsys)
    assert plain == s["text"] + "\n"


# --- llama2.c's run.c ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_c(tmp_path_factory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not PEER_RUN_C.is_file():
        pytest.skip(f"llama2.c's run.c is not at {PEER_RUN_C}")
    if cc is None:
        pytest.skip("no C compiler (gcc or cc) to build llama2.c's run.c")
    exe = tmp_path_factory.mktemp("runc") / "run"
    subprocess.run([cc, "-O3", "-o", str(exe), str(PEER_RUN_C), "-lm"], check=True, capture_output=True, timeout=120)
    return exe


@pytest.mark.parametrize("run", list(RUNS))
def test_llama2c_export_generates_our_text_in_run_c(trained, run_c, tmp_path, capsys, run):
    cli(trained, "export", run, "--format", "llama2c", "--to", str(tmp_path / "c"), capsys=capsys)
    ours = cli(trained, "generate", run, "--prompt", "", "--temperature", "0", "--max-tokens", str(N),
               capsys=capsys)
    # -n counts positions from BOS; the token sampled at the last one is printed, never fed,
    # so from BOS alone -n N prints N tokens
    p = subprocess.run([str(run_c), str(tmp_path / "c" / "model.bin"), "-z", str(tmp_path / "c" / "tokenizer.bin"),
                        "-t", "0", "-n", str(N), "-i", ""], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == ours
    assert ours.count(" ") > 10  # real text


# --- llama.cpp -----------------------------------------------------------------------------

def _gguf(trained, tmp_path, capsys, run, dtype) -> Path:
    cli(trained, "export", run, "--format", "gguf", "--dtype", dtype, "--to", str(tmp_path / dtype), capsys=capsys)
    return tmp_path / dtype / "model.gguf"


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_gguf_reader_reads_back_every_key_and_tensor(trained, tmp_path, capsys, run, dtype):
    gguf = pytest.importorskip("gguf")
    from workbench.export.gguf_file import encode_tensor, gguf_tensors
    from workbench.generation.generate import load_for_generation

    path = _gguf(trained, tmp_path, capsys, run, dtype)
    model, tok, cfg, _ = load_for_generation(trained, run, device="cpu")
    m = cfg.model
    r = gguf.GGUFReader(str(path))
    f = {k: v.contents() for k, v in r.fields.items()}
    want = {
        "general.architecture": "llama", "general.name": run,
        "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[dtype],
        "llama.vocab_size": 400, "llama.context_length": m.max_seq_len, "llama.embedding_length": m.dim,
        "llama.block_count": m.n_layers, "llama.feed_forward_length": m.ffn_dim,
        "llama.attention.head_count": m.n_heads, "llama.attention.head_count_kv": m.kv_heads,
        "llama.attention.key_length": m.head_dim, "llama.attention.value_length": m.head_dim,
        "llama.rope.dimension_count": m.head_dim, "llama.rope.freq_base": m.rope_theta,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.padding_token_id": 3,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": False,
    }
    assert {k: f[k] for k in want} == want
    assert abs(f["llama.attention.layer_norm_rms_epsilon"] - m.norm_eps) < 1e-12
    assert f["tokenizer.ggml.tokens"] == [tok.id_to_piece(i) for i in range(400)]
    assert np.allclose(f["tokenizer.ggml.scores"], [tok.sp.get_score(i) for i in range(400)])
    types = f["tokenizer.ggml.token_type"]
    assert types[:4] == [2, 3, 3, 3] and set(types[4:260]) == {6} and set(types[260:]) == {1}
    tensors = {t.name: t for t in r.tensors}
    expected = gguf_tensors(model)
    assert set(tensors) == set(expected) and ("output.weight" in tensors) == (run == "untied")
    for name, arr in expected.items():
        data, raw = encode_tensor(arr, dtype)
        t = tensors[name]
        assert [int(d) for d in reversed(t.shape)] == list(arr.shape), name  # GGUF lists dims innermost first
        assert np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint8), data.reshape(-1).view(np.uint8)), name
        assert t.tensor_type == (raw if raw is not None else {np.float32: 0, np.float16: 1}[data.dtype.type])
    # q and k in llama.cpp's interleaved RoPE order, the rest as they are (checked in f32 only)
    if dtype == "f32":
        from workbench.export.layout import interleave_heads

        wq, wk, wv = model.state_dict()["layers.1.attn.wqkv.weight"].split(
            (m.n_heads * m.head_dim, m.kv_heads * m.head_dim, m.kv_heads * m.head_dim))
        read = {n: np.asarray(tensors[f"blk.1.attn_{n}.weight"].data) for n in "qkv"}
        assert np.array_equal(read["q"], interleave_heads(wq, m.n_heads).numpy())
        assert np.array_equal(read["k"], interleave_heads(wk, m.kv_heads).numpy())
        assert np.array_equal(read["v"], wv.numpy())


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_gguf_export_generates_our_tokens_in_llama_cpp(trained, tmp_path, capsys, run, dtype):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp check needs the `llama` extra (llama-cpp-python)")
    ours = greedy(trained, run, capsys)
    prompt_text = "Once upon a time, Lily"
    ours_prompted = greedy(trained, run, capsys, prompt_text)
    llm = llama_cpp.Llama(model_path=str(_gguf(trained, tmp_path, capsys, run, dtype)), n_ctx=64,
                          logits_all=True, verbose=False, n_threads=1, seed=0)
    # its tokenizer reads our vocabulary as we do, byte-fallback pieces included
    prompt = llm.tokenize(prompt_text.encode(), add_bos=True)
    assert prompt == ours_prompted["prompt_ids"]
    from workbench.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(trained.run_path(run) / "tokenizer")
    odd = "Lily saw 日本 😀 and  two spaces\n"
    ids = tok.encode(odd)
    assert any(tok.sp.is_byte(i) for i in ids)
    assert llm.tokenize(odd.encode(), add_bos=False) == ids
    assert llm.detokenize(ids).decode() == odd

    def llama_cpp_greedy(ids):
        llm.reset()
        llm.eval(ids)
        out = []
        while len(out) < N:
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if nxt == llm.token_eos():
                break
            out.append(nxt)
            llm.eval([nxt])
        return out

    try:
        for start, mine in (([llm.token_bos()], ours), (prompt, ours_prompted)):
            theirs = llama_cpp_greedy(start)
            assert theirs == mine["ids"], (dtype, theirs, mine["ids"])
            assert llm.detokenize(theirs).decode() == mine["text"]
    finally:
        llm.close()  # now, not at interpreter exit (where llama-cpp-python's __del__ can fail)


# --- transformers --------------------------------------------------------------------------

@pytest.mark.parametrize("run", [*RUNS, *HF_ONLY])
def test_hf_export_generates_our_text_in_transformers(trained, tmp_path, capsys, run):
    tf = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf")
    import torch

    cli(trained, "export", run, "--format", "hf", "--to", str(tmp_path / "hf"), capsys=capsys)
    model = tf.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for prompt in ("", "Once upon a time, Lily"):
        ours = greedy(trained, run, capsys, prompt)
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        assert ids[0].tolist() == ours["prompt_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=N, pad_token_id=tokenizer.pad_token_id)
        new = out[0, ids.shape[1]:]
        assert tokenizer.decode(new, skip_special_tokens=True) == ours["text"]
