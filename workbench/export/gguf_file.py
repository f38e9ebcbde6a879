"""The ``gguf`` format: ``model.gguf`` for llama.cpp and the tools built on it.

Written with the ``gguf`` package (llama.cpp's own writer) as the ``llama`` architecture:

* ``llama.*`` hyperparameters — context length, embedding length, block count, feed-forward
  length, head counts, key/value length, RoPE dimension count and base, RMSNorm eps, vocab size;
* the tokenizer as a sentencepiece (``tokenizer.ggml.model = "llama"``) vocabulary: every piece
  as sentencepiece spells it (``▁`` for a space), its score, its type (normal, unknown,
  control, byte for the ``<0xXX>`` pieces of byte fallback, unused for ids past the
  tokenizer), the bos/eos/unk/pad ids, ``add_bos_token`` and ``add_space_prefix`` as the
  tokenizer has it (false for ours, which have no dummy prefix; true for an imported Llama one);
* tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q`` ..., ``output_norm``,
  ``output`` only when the head is untied — llama.cpp reuses the embedding otherwise).

llama.cpp's ``llama`` architecture rotates neighbouring pairs (Meta's layout; its HF converter
permutes q and k for that reason), so q and k rows are interleaved here
(``layout.interleave_heads``).

``--dtype``: ``f32`` (default, exact), ``f16``, or ``q8_0`` (blocks of 32 values with one
scale, quantized by the ``gguf`` package; rows must be a multiple of 32 long). Norm weights
stay f32 in every case, as llama.cpp's converter keeps 1-D tensors.

``read`` is the other way (``workbench import``): a ``llama`` GGUF file — ours or llama.cpp's —
with F32, F16 or Q8_0 tensors (dequantised by the ``gguf`` package into float32), q and k
back in our row order, and its vocabulary rebuilt as a sentencepiece model (``gguf_vocab``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.export.layout import (Imported, check_tensors, llama_config, llama_from_named,
                                     llama_incompatibilities, llama_named, llama_shapes)

NAME = "gguf"
SUMMARY = "llama.cpp: model.gguf (llama-cli, llama-cpp-python, Ollama)"
DTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32
FILE = "model.gguf"


def incompatibilities(cfg, tok) -> list[str]:
    why = llama_incompatibilities(cfg, "llama.cpp")
    if importlib.util.find_spec("gguf") is None:
        why.append("the gguf package is not installed (pip install 'workbench[export]')")
    if tok is not None and tok.vocab_size > cfg.vocab_size:
        why.append(f"the tokenizer has {tok.vocab_size} pieces, more than the model's vocab_size "
                   f"{cfg.vocab_size}")
    return why


def check_dtype(dtype, cfg) -> str:
    d = "f32" if dtype is None else dtype
    if d not in DTYPES:
        raise WorkbenchError(f"--dtype {dtype!r} is not supported for gguf: expected one of {', '.join(DTYPES)}")
    if d == "q8_0":
        short = [f"{n} is {v}" for n, v in (("dim", cfg.dim), ("the MLP hidden size", cfg.ffn_dim))
                 if v % Q8_BLOCK]
        if short:
            raise WorkbenchError(f"--dtype q8_0 quantizes rows in blocks of {Q8_BLOCK} values, but "
                                 f"{' and '.join(short)} (not a multiple of {Q8_BLOCK}): use f16 or f32")
    return d


GGUF_TOP = {"embed": "token_embd.weight", "norm": "output_norm.weight", "lm_head": "output.weight"}
GGUF_ROLES = {"attn_norm": "attn_norm.weight", "q": "attn_q.weight", "k": "attn_k.weight",
              "v": "attn_v.weight", "o": "attn_output.weight", "mlp_norm": "ffn_norm.weight",
              "gate": "ffn_gate.weight", "up": "ffn_up.weight", "down": "ffn_down.weight"}


def gguf_tensors(model) -> dict:
    """llama.cpp tensor name -> float32 numpy array in torch's (out, in) shape, q/k interleaved."""
    named = llama_named(model, GGUF_TOP, "blk.{i}.", GGUF_ROLES, interleave=True)
    return {k: v.float().numpy() for k, v in named.items()}


def vocabulary(tok, vocab_size: int):
    """(pieces, scores, token types) for every model id."""
    from gguf import TokenType

    sp = tok.sp
    pieces, scores, types = [], [], []
    for i in range(vocab_size):
        if i >= tok.vocab_size:  # a padded model vocab: ids the tokenizer never makes
            pieces.append(f"[PAD{i}]")
            scores.append(-1e9)
            types.append(TokenType.UNUSED)
            continue
        pieces.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(TokenType.CONTROL if sp.is_control(i) else TokenType.UNKNOWN if sp.is_unknown(i)
                     else TokenType.BYTE if sp.is_byte(i) else TokenType.UNUSED if sp.is_unused(i)
                     else TokenType.NORMAL)
    return pieces, scores, types


def encode_tensor(arr, dtype: str):
    """(array to store, raw GGML type or None) for one tensor."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    if arr.ndim == 1 or dtype == "f32":
        return arr.astype(np.float32), None
    if dtype == "f16":
        return arr.astype(np.float16), None
    return quants.quantize(arr, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


def write(job, tmp: Path) -> None:
    import gguf

    cfg, tok = job.cfg.model, job.tok
    dtype = job.options.get("dtype", "f32")
    w = gguf.GGUFWriter(str(tmp / FILE), "llama")
    w.add_name(job.run.name)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(float(cfg.norm_eps))

    pieces, scores, types = vocabulary(tok, cfg.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_unk_token_id(tok.unk_id)
    if tok.pad_id >= 0:
        w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    # ours have no dummy prefix; an imported (Llama-style) tokenizer may: llama.cpp must do as it does
    w.add_add_space_prefix(bool(tok.normalizer["add_dummy_prefix"]))
    w.add_remove_extra_whitespaces(bool(tok.normalizer["remove_extra_whitespaces"]))

    for name, arr in gguf_tensors(job.model).items():
        data, raw = encode_tensor(arr, dtype)
        w.add_tensor(name, data, raw_dtype=raw)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()


# --- the other way: model.gguf into a run (``workbench import``) -----------------------------

MAGIC = b"GGUF"
READ_TYPES = {0: "f32", 1: "f16", 8: "q8_0"}  # GGMLQuantizationType values this import dequantises
# llama.* keys that hold what workbench's Llama has (the rest are refused unless 0 or empty)
_LLAMA_KEYS = {"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
               "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "attention.key_length",
               "attention.value_length", "rope.dimension_count", "rope.freq_base", "vocab_size"}


def _fields(reader) -> dict:
    out = {}
    for name, field in reader.fields.items():
        try:
            out[name] = field.contents()
        except Exception:  # a value the gguf package cannot decode: unknown to us anyway
            out[name] = None
    return out


def model_config(f: dict, n_tokens: int):
    """The ``llama.*`` values of a GGUF file as a ModelConfig (the head's tying is decided by the
    tensors); a key our Llama cannot express is refused by name."""
    arch = f.get("general.architecture")
    if arch != "llama":
        raise WorkbenchError(f"general.architecture is {arch!r}; workbench imports the 'llama' architecture")
    for name, value in f.items():
        if name.startswith("llama.") and name[6:] not in _LLAMA_KEYS and value not in (None, 0, "", "none", [], False):
            raise WorkbenchError(f"its {name} is {value!r}, which workbench's Llama cannot express")

    def need(key):
        if f.get(f"llama.{key}") is None:
            raise WorkbenchError(f"it has no llama.{key}")
        return f[f"llama.{key}"]

    dim, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = dim // heads if heads else 0
    for key in ("attention.key_length", "attention.value_length", "rope.dimension_count"):
        if f.get(f"llama.{key}") not in (None, head_dim):
            raise WorkbenchError(f"its llama.{key} is {f[f'llama.{key}']}, but workbench's heads are "
                                 f"embedding_length / head_count = {head_dim} wide throughout")
    return llama_config(
        "its llama.* header", vocab_size=int(f.get("llama.vocab_size") or n_tokens), dim=dim,
        n_layers=int(need("block_count")), n_heads=heads,
        n_kv_heads=int(f.get("llama.attention.head_count_kv") or heads), hidden_dim=int(need("feed_forward_length")),
        norm_eps=float(need("attention.layer_norm_rms_epsilon")), rope_theta=float(f.get("llama.rope.freq_base", 10000.0)),
        max_seq_len=int(need("context_length")), tie_embeddings=True)


def read(path: Path) -> Imported:
    """model.gguf as an ``Imported``: hyperparameters, dequantised tensors, and the vocabulary
    rebuilt as a sentencepiece model that was checked to encode and decode as the file's does."""
    import torch
    from gguf import GGUFReader, quants

    import workbench.export.gguf_vocab as gguf_vocab

    try:
        reader = GGUFReader(str(path))
        f = _fields(reader)
        tensors = {t.name: t for t in reader.tensors}
    except Exception as e:  # the gguf package reports a short or damaged file in several types
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise WorkbenchError(f"it is not a readable GGUF file (truncated or damaged: {first})") from None
    cfg = model_config(f, len(f.get("tokenizer.ggml.tokens") or ()))
    vocab = gguf_vocab.vocab_from_fields(f)
    if GGUF_TOP["lm_head"] in tensors:
        cfg = cfg.replace(tie_embeddings=False)
    if len(vocab.pieces) != cfg.vocab_size:
        raise WorkbenchError(f"its vocabulary has {len(vocab.pieces)} tokens but llama.vocab_size is {cfg.vocab_size}")
    check_tensors({n: tuple(int(d) for d in reversed(t.shape)) for n, t in tensors.items()},
                  llama_shapes(cfg, GGUF_TOP, "blk.{i}.", GGUF_ROLES))
    odd = [t for t in tensors.values() if int(t.tensor_type) not in READ_TYPES]
    if odd:
        raise WorkbenchError(f"its tensor {odd[0].name} is {odd[0].tensor_type.name}; this import reads "
                             f"{', '.join(v.upper() for v in READ_TYPES.values())} tensors")
    named = {}
    for name, t in tensors.items():
        shape = tuple(int(d) for d in reversed(t.shape))
        try:
            arr = quants.dequantize(t.data, t.tensor_type).reshape(shape)
        except Exception as e:  # a tensor cut short by a truncated file
            raise WorkbenchError(f"its tensor {name} cannot be read (truncated or damaged: {type(e).__name__})") from None
        named[name] = torch.from_numpy(arr.astype("float32", copy=True))
    proto = gguf_vocab.rebuild(vocab)
    gguf_vocab.check(vocab, proto)
    types = sorted({READ_TYPES[int(t.tensor_type)] for t in tensors.values()}, key=list(READ_TYPES.values()).index)
    return Imported(NAME, cfg, llama_from_named(named, cfg, GGUF_TOP, "blk.{i}.", GGUF_ROLES, interleave=True),
                    proto, {"tensor_types": types}, {"bos": vocab.bos, "eos": vocab.eos})
