"""The ``gguf`` format: ``model.gguf`` for llama.cpp and the tools built on it.

Written with the ``gguf`` package (llama.cpp's own writer) as the ``llama`` architecture:

* ``llama.*`` hyperparameters — context length, embedding length, block count, feed-forward
  length, head counts, key/value length, RoPE dimension count and base, RMSNorm eps, vocab size;
* the tokenizer as a sentencepiece (``tokenizer.ggml.model = "llama"``) vocabulary: every piece
  as sentencepiece spells it (``▁`` for a space), its score, its type (normal, unknown,
  control, byte for the ``<0xXX>`` pieces of byte fallback, unused for ids past the
  tokenizer), the bos/eos/unk/pad ids, ``add_bos_token`` and ``add_space_prefix = false``
  (our tokenizers have no dummy prefix, so llama.cpp must not add one);
* tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q`` ..., ``output_norm``,
  ``output`` only when the head is untied — llama.cpp reuses the embedding otherwise).

llama.cpp's ``llama`` architecture rotates neighbouring pairs (Meta's layout; its HF converter
permutes q and k for that reason), so q and k rows are interleaved here
(``layout.interleave_heads``).

``--dtype``: ``f32`` (default, exact), ``f16``, or ``q8_0`` (blocks of 32 values with one
scale, quantized by the ``gguf`` package; rows must be a multiple of 32 long). Norm weights
stay f32 in every case, as llama.cpp's converter keeps 1-D tensors.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.export.layout import llama_incompatibilities, llama_named

NAME = "gguf"
SUMMARY = "llama.cpp: model.gguf (llama-cli, llama-cpp-python, Ollama)"
DTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32
FILE = "model.gguf"


def incompatibilities(cfg, tok) -> list[str]:
    why = llama_incompatibilities(cfg, "llama.cpp")
    if importlib.util.find_spec("gguf") is None:
        why.append("the gguf package is not installed (pip install 'workbench[export]')")
    if tok.vocab_size > cfg.vocab_size:
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
    w.add_add_space_prefix(False)
    w.add_remove_extra_whitespaces(False)

    for name, arr in gguf_tensors(job.model).items():
        data, raw = encode_tensor(arr, dtype)
        w.add_tensor(name, data, raw_dtype=raw)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
