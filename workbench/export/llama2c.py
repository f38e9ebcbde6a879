"""The ``llama2c`` format: ``model.bin`` and ``tokenizer.bin`` for llama2.c's ``run.c``.

``./run model.bin -z tokenizer.bin -t 0 -n 40 -i ""`` generates from BOS alone, greedily.

**model.bin, version 0** (the legacy checkpoint ``run.c`` reads): seven little-endian int32s —
dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len, where a *negative*
vocab_size says the output head is not tied to the embedding — then float32 tensors, each
row-major as torch stores a Linear weight (out, in): the embedding (V, C); every layer's
attention norm, then every wq, wk, wv, wo, every MLP norm, every w1 (gate), w2 (down), w3 (up);
the final norm; two RoPE tables (max_seq_len, head_dim/2) of cos and sin that ``run.c`` skips
(it computes its own); and, when untied, the output head (V, C).
**Version 1** (``--version 1``, llama2.c's "ak42" file) has a 256-byte header — magic
0x616b3432, version 1, the same seven ints (vocab_size positive), one byte "head is tied",
zero padding — then the norms first (attention, MLP, final), the embedding, wq, wk, wv, wo,
w1, w2, w3, and the head when untied; no RoPE tables.

q and k rows are interleaved (see ``layout.interleave_heads``): ``run.c`` rotates neighbouring
pairs. ``run.c`` also hard-codes RMSNorm's eps (1e-5), RoPE's base (10000) and BOS = id 1 (it
starts there and stops when BOS comes again), so other values are refused rather than
generating different text.

**tokenizer.bin**: an int32 max piece length, then for each id a float32 score, an int32 byte
length and the piece's UTF-8 bytes. A piece is what our decoder makes of it: ``▁`` becomes a
space, byte pieces stay ``<0xXX>`` (``run.c`` turns them into the byte), ``<unk>`` is `` ⁇ ``,
and control pieces (BOS, EOS, PAD) print nothing, because sentencepiece decodes them to nothing.
``run.c``'s reader fails on a zero-length piece (``fread`` of 0 bytes), so "nothing" is stored
as one NUL byte: the empty C string. So ``run.c``'s text is ours; a story that ends (EOS)
prints nothing more, and ``run.c`` stops at the BOS the model predicts next.
"""

from __future__ import annotations

import struct
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.export.layout import interleave_heads, llama_incompatibilities, llama_tensors

NAME = "llama2c"
SUMMARY = "llama2.c's run.c: model.bin + tokenizer.bin"
VERSIONS = (0, 1)
MAGIC = 0x616B3432  # "ak42"
HEADER_V1 = 256
RUN_C_EPS, RUN_C_THETA, RUN_C_BOS = 1e-5, 10000.0, 1


def incompatibilities(cfg, tok) -> list[str]:
    why = llama_incompatibilities(
        cfg, "run.c", also={"norm_eps": RUN_C_EPS, "rope_theta": RUN_C_THETA},
        reasons={"norm_eps": "run.c hard-codes 1e-05", "rope_theta": "run.c hard-codes 10000.0"})
    if tok.bos_id != RUN_C_BOS:
        why.append(f"the tokenizer's BOS id is {tok.bos_id} (run.c starts from and stops at id 1)")
    if tok.vocab_size > cfg.vocab_size:
        why.append(f"the tokenizer has {tok.vocab_size} pieces, more than the model's vocab_size "
                   f"{cfg.vocab_size}")
    return why


def check_version(version) -> int:
    v = 0 if version is None else version
    if v not in VERSIONS:
        raise WorkbenchError(f"--version {version!r} is not supported for llama2c: expected "
                             f"{' or '.join(map(str, VERSIONS))}")
    return v


def _f32(t) -> bytes:
    return t.detach().to("cpu").float().numpy().astype("<f4", copy=False).tobytes()


def model_bin(model, version: int = 0):
    """The bytes of model.bin, in pieces (header, then one tensor at a time)."""
    cfg = model.config
    t = llama_tensors(model)
    tied = t.lm_head is None
    q = [interleave_heads(L.q, cfg.n_heads) for L in t.layers]
    k = [interleave_heads(L.k, cfg.kv_heads) for L in t.layers]
    dims = (cfg.dim, cfg.ffn_dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads)
    Ls = t.layers
    if version == 0:
        yield struct.pack("<7i", *dims, cfg.vocab_size if tied else -cfg.vocab_size, cfg.max_seq_len)
        order = [t.embed, *(L.attn_norm for L in Ls), *q, *k, *(L.v for L in Ls), *(L.o for L in Ls),
                 *(L.mlp_norm for L in Ls), *(L.gate for L in Ls), *(L.down for L in Ls),
                 *(L.up for L in Ls), t.norm, model.pos.cos, model.pos.sin]
    else:
        head = struct.pack("<Ii7iB", MAGIC, 1, *dims, cfg.vocab_size, cfg.max_seq_len, int(tied))
        yield head + b"\0" * (HEADER_V1 - len(head))
        order = [*(L.attn_norm for L in Ls), *(L.mlp_norm for L in Ls), t.norm, t.embed, *q, *k,
                 *(L.v for L in Ls), *(L.o for L in Ls), *(L.gate for L in Ls),
                 *(L.down for L in Ls), *(L.up for L in Ls)]
    if not tied:
        order.append(t.lm_head)
    for w in order:
        yield _f32(w)


def tokenizer_pieces(tok, vocab_size: int) -> list[tuple[bytes, float]]:
    """(bytes, score) for every model id; ids past the tokenizer's vocab are empty."""
    sp = tok.sp
    out = []
    for i in range(vocab_size):
        if i >= tok.vocab_size or sp.is_control(i):
            text = ""
        elif sp.is_byte(i):
            text = sp.id_to_piece(i)  # "<0xXX>", which run.c turns into the byte
        else:
            text = sp.decode([i])  # "▁" as a space; "<unk>" as " ⁇ ", as our decoder says
        # b"\0": run.c cannot read an empty piece, and NUL is the empty C string it prints
        out.append((text.encode("utf-8") or b"\0", float(sp.get_score(i)) if i < tok.vocab_size else 0.0))
    return out


def tokenizer_bin(tok, vocab_size: int) -> bytes:
    pieces = tokenizer_pieces(tok, vocab_size)
    parts = [struct.pack("<i", max(len(b) for b, _ in pieces))]
    for b, score in pieces:
        parts.append(struct.pack("<fi", score, len(b)) + b)
    return b"".join(parts)


def write(job, tmp: Path) -> None:
    with open(tmp / "model.bin", "wb") as f:
        for chunk in model_bin(job.model, job.options.get("version", 0)):
            f.write(chunk)
    (tmp / "tokenizer.bin").write_bytes(tokenizer_bin(job.tok, job.cfg.model.vocab_size))
