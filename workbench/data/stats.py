"""What a prepared data folder holds, token by token: `data info`'s statistics.

Per split: the documents' lengths in tokens and in bytes of text (min, median, 95th percentile,
max), the share of tokens that are byte-fallback pieces (text the tokenizer had no piece for),
and the most frequent tokens. Documents are found by their BOS token (data prepare writes each
as BOS … EOS); a document's bytes are the UTF-8 bytes its pieces stand for (a byte piece is one
byte, BOS and EOS none), so they add up to the split's byte count. The token files are read in
chunks: memory stays bounded whatever their size.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from workbench.data.tokens import SPLIT_FILES, DataInfo, TokenFile

CHUNK = 1 << 24  # tokens per read


def piece_tables(tok) -> tuple[np.ndarray, np.ndarray]:
    """For every id of ``tok``: the bytes of text it stands for, and whether it is a byte piece."""
    n = tok.vocab_size
    nbytes, is_byte = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    for v in tok.vocab():
        if v["kind"] == "byte":
            nbytes[v["id"]], is_byte[v["id"]] = 1, True
        elif v["kind"] == "normal":
            nbytes[v["id"]] = len(v["surface"].encode("utf-8"))
    return nbytes, is_byte


def _spread(x: np.ndarray) -> dict:
    if not x.size:
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    return {"min": int(x.min()), "median": float(np.median(x)), "p95": float(np.percentile(x, 95)),
            "max": int(x.max())}


def split_stats(tokens: TokenFile, bos_id: int, nbytes: np.ndarray, is_byte: np.ndarray, top: int = 10,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """The statistics of one token file (see the module)."""
    mm = np.memmap(tokens.path, dtype=tokens.dtype, mode="r", shape=(tokens.n_tokens,)) if tokens.n_tokens else None
    doc_tokens: list[np.ndarray] = []
    doc_bytes: list[np.ndarray] = []
    counts = np.zeros(len(nbytes), dtype=np.int64)
    cur_t = cur_b = 0
    n_byte = 0
    try:
        for start in range(0, tokens.n_tokens, CHUNK):
            ids = np.asarray(mm[start:start + CHUNK], dtype=np.int64)
            counts += np.bincount(ids, minlength=len(nbytes))[: len(nbytes)]
            n_byte += int(is_byte[ids].sum())
            cum = np.concatenate([[0], np.cumsum(nbytes[ids])])
            pos = np.concatenate([[0], np.flatnonzero(ids == bos_id), [ids.size]])
            seg_t, seg_b = np.diff(pos), cum[pos[1:]] - cum[pos[:-1]]
            cur_t, cur_b = cur_t + int(seg_t[0]), cur_b + int(seg_b[0])  # the document going on from before
            if seg_t.size > 1:  # a BOS in this chunk: that document ended, whole ones follow
                doc_tokens.append(np.array([cur_t], dtype=np.int64))
                doc_bytes.append(np.array([cur_b], dtype=np.int64))
                doc_tokens.append(seg_t[1:-1])
                doc_bytes.append(seg_b[1:-1])
                cur_t, cur_b = int(seg_t[-1]), int(seg_b[-1])
            if progress is not None:
                progress(min(start + CHUNK, tokens.n_tokens), tokens.n_tokens)
    finally:
        del mm
    doc_tokens.append(np.array([cur_t], dtype=np.int64))
    doc_bytes.append(np.array([cur_b], dtype=np.int64))
    t, b = np.concatenate(doc_tokens), np.concatenate(doc_bytes)
    keep = t > 0  # nothing before the first BOS is no document
    t, b = t[keep], b[keep]
    order = np.argsort(-counts, kind="stable")[:top]
    total = max(1, tokens.n_tokens)
    return {"documents": int(t.size), "tokens": tokens.n_tokens, "bytes": int(b.sum()),
            "tokens_per_document": _spread(t), "bytes_per_document": _spread(b),
            "byte_fallback_share": n_byte / total,
            "top": [{"id": int(i), "count": int(counts[i]), "share": float(counts[i] / total)} for i in order
                    if counts[i]]}


def data_stats(info: DataInfo, tok, top: int = 10, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """``split_stats`` of every split of ``info``, tokenized with ``tok``; each top token gets
    its surface text."""
    nbytes, is_byte = piece_tables(tok)
    out = {}
    for split in SPLIT_FILES:
        s = split_stats(info.split(split), tok.bos_id, nbytes, is_byte, top,
                        None if progress is None else (lambda d, n, split=split: progress(split, d, n)))
        for row in s["top"]:
            row["piece"] = tok.surface(row["id"])
        out[split] = s
    return out
