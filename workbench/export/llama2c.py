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

``read`` is the other way (``workbench import``): a model.bin of version 0 or 1 — llama2.c's
own or ours — with the sentencepiece ``tokenizer.model`` it was trained with (model.bin holds
no vocabulary), following the same ``tensor_order``.

**tokenizer.bin**: an int32 max piece length, then for each id a float32 score, an int32 byte
length and the piece's UTF-8 bytes. A piece is what our decoder makes of it: ``▁`` becomes a
space, byte pieces stay ``<0xXX>`` (``run.c`` turns them into the byte), ``<unk>`` is `` ⁇ ``,
and control pieces (BOS, EOS, PAD) print nothing, because sentencepiece decodes them to nothing.
``run.c``'s reader fails on a zero-length piece (``fread`` of 0 bytes), so "nothing" is stored
as one NUL byte: the empty C string. So ``run.c``'s text is ours; a story that ends (EOS)
prints nothing more, and ``run.c`` stops at the BOS the model predicts next.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.export.layout import (Imported, interleave_heads, llama_config, llama_from_named,
                                     llama_incompatibilities, llama_tensors, role_shapes)

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
    if tok is None:
        return why
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


def tensor_order(version: int, n_layers: int, tied: bool) -> list[tuple[str, int | None]]:
    """model.bin's tensors in file order as (role, layer): a ``LlamaLayer`` role with its layer,
    or embed, norm, lm_head and version 0's RoPE tables cos and sin with None. The writer and
    the reader (``read``) both follow it."""
    def each(*roles):
        return [(r, i) for r in roles for i in range(n_layers)]

    if version == 0:
        order = [("embed", None), *each("attn_norm", "q", "k", "v", "o", "mlp_norm", "gate", "down", "up"),
                 ("norm", None), ("cos", None), ("sin", None)]
    else:
        order = [*each("attn_norm", "mlp_norm"), ("norm", None), ("embed", None),
                 *each("q", "k", "v", "o", "gate", "down", "up")]
    return order if tied else [*order, ("lm_head", None)]


def model_bin(model, version: int = 0):
    """The bytes of model.bin, in pieces (header, then one tensor at a time)."""
    cfg = model.config
    t = llama_tensors(model)
    tied = t.lm_head is None
    dims = (cfg.dim, cfg.ffn_dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads)
    if version == 0:
        yield struct.pack("<7i", *dims, cfg.vocab_size if tied else -cfg.vocab_size, cfg.max_seq_len)
    else:
        head = struct.pack("<Ii7iB", MAGIC, 1, *dims, cfg.vocab_size, cfg.max_seq_len, int(tied))
        yield head + b"\0" * (HEADER_V1 - len(head))
    whole = {"embed": t.embed, "norm": t.norm, "lm_head": t.lm_head, "cos": model.pos.cos, "sin": model.pos.sin}
    for role, i in tensor_order(version, cfg.n_layers, tied):
        w = whole[role] if i is None else getattr(t.layers[i], role)
        if role in ("q", "k"):
            w = interleave_heads(w, cfg.n_heads if role == "q" else cfg.kv_heads)
        yield _f32(w)


def tokenizer_pieces(tok, vocab_size: int) -> list[tuple[bytes, float]]:
    """(bytes, score) for every model id; ids past the tokenizer's vocab are empty."""
    sp = tok.sp
    # a tokenizer with a dummy prefix (Llama's, imported) would lose the space of a lone piece
    # in decode; run.c takes that space off after BOS itself, as llama2.c's own tokenizer.bin expects
    prefix = tok.normalizer["add_dummy_prefix"]
    out = []
    for i in range(vocab_size):
        if i >= tok.vocab_size or sp.is_control(i):
            text = ""
        elif sp.is_byte(i):
            text = sp.id_to_piece(i)  # "<0xXX>", which run.c turns into the byte
        elif prefix and not sp.is_unknown(i):
            text = sp.id_to_piece(i).replace("\u2581", " ")
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


# --- the other way: model.bin into a run (``workbench import``) ------------------------------

HEADER_V0 = 28
NOT_A_MODEL = ("is not a model file this import reads: not GGUF (magic 'GGUF'), not a llama2.c model.bin "
               "of version 1 (magic 'ak42'), and not a legacy (version 0) one")
_ROLES = {r: r for r in ("attn_norm", "q", "k", "v", "o", "mlp_norm", "gate", "up", "down")}
_TOP = {"embed": "embed", "norm": "norm", "lm_head": "lm_head"}


def read_header(path: Path) -> tuple[int, object, int]:
    """(version, ModelConfig, where the tensors start) of a llama2.c model.bin, checked against
    the file's size; anything else is refused in one line."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_V1)
    if len(head) >= 8 and struct.unpack_from("<I", head)[0] == MAGIC:
        version = struct.unpack_from("<i", head, 4)[0]
        if version != 1:
            raise WorkbenchError(f"it is a llama2.c model.bin of version {version}; this import reads versions 0 and 1"
                                 + (" (version 2 holds int8 weights)" if version == 2 else ""))
        if len(head) < HEADER_V1:
            raise WorkbenchError(f"it is truncated: {size} bytes, shorter than llama2.c's {HEADER_V1}-byte header")
        *dims, vocab, seq = struct.unpack_from("<7i", head, 8)
        tied, offset = bool(head[36]), HEADER_V1
    elif len(head) >= HEADER_V0:
        version, offset = 0, HEADER_V0
        *dims, vocab, seq = struct.unpack_from("<7i", head)
        tied, vocab = vocab > 0, abs(vocab)
    else:
        raise WorkbenchError(f"it {NOT_A_MODEL} (it is only {size} bytes long)")
    names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads")
    said = ", ".join(f"{k} {v}" for k, v in zip((*names, "vocab_size", "max_seq_len"), (*dims, vocab, seq)))
    try:
        cfg = llama_config(f"its llama2.c header ({said})", **dict(zip(names, dims)), vocab_size=vocab,
                           max_seq_len=seq, norm_eps=RUN_C_EPS, rope_theta=RUN_C_THETA, tie_embeddings=tied)
    except WorkbenchError:
        if version == 0:  # no magic to go by: a header of nonsense is a file of another kind
            raise WorkbenchError(f"it {NOT_A_MODEL} (read as one, its header says {said})") from None
        raise
    need = offset + 4 * sum(math.prod(_shape(role, cfg)) for role, _ in tensor_order(version, cfg.n_layers, tied))
    if size != need:
        what = "it is truncated" if size < need else "it is longer than its header says"
        raise WorkbenchError(f"{what}: a llama2.c version {version} model.bin with {said} has {need:,} bytes, this "
                             f"file {size:,}")
    return version, cfg, offset


def _shape(role: str, cfg) -> tuple:
    return (cfg.max_seq_len, cfg.head_dim // 2) if role in ("cos", "sin") else role_shapes(cfg)[role]


def read(path: Path, tokenizer: bytes) -> Imported:
    """model.bin (version 0 or 1) and its tokenizer as an ``Imported``: run.c's eps and RoPE
    base, q and k back in our row order, the RoPE tables of version 0 skipped."""
    import numpy as np
    import torch

    version, cfg, offset = read_header(path)
    flat = np.memmap(path, dtype="<f4", mode="r", offset=offset)
    named, at = {}, 0
    for role, i in tensor_order(version, cfg.n_layers, cfg.tie_embeddings):
        shape = _shape(role, cfg)
        n = math.prod(shape)
        named[role if i is None else f"{i}.{role}"] = torch.from_numpy(np.array(flat[at:at + n]).reshape(shape))
        at += n
    del flat
    tensors = llama_from_named(named, cfg, _TOP, "{i}.", _ROLES, interleave=True)
    return Imported(NAME, cfg, tensors, tokenizer, {"version": version}, {"bos": RUN_C_BOS})
