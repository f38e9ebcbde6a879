"""The ``data prepare`` verb: a source's documents, encoded in parallel into token files.

``prepare_data`` streams a source's documents in chunks and encodes each chunk as
``bos + tokens + eos`` per document with sentencepiece's own thread pool (one thread per core;
it scales better here than worker processes, which pay for pickling). The ids go to ``train.bin``
and ``val.bin`` under temporary names that are renamed into place at the end, with
``meta.json`` written last. Memory stays bounded: one chunk at a time.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from workbench import fileio
from workbench.data.sources import Source, resolve_source
from workbench.errors import Cancelled, WorkbenchError
from workbench.tokenizer.tokenizer import load_tokenizer, tokenizer_info
from workbench.workspace import Workspace, check_name
from workbench.data.tokens import CHUNK_BYTES, DataInfo, META_FILE, META_VERSION, ProgressFn, SOURCE_SPLIT, SPLIT_FILES, data_lock_path, read_data_info, read_sha, token_dtype


def default_data_name(tokenizer_name: str, source: Source) -> str:
    """``<tokenizer>-<source>-<fingerprint>``: another source (another folder that happens to
    have the same name, or an edited file) gets another folder, never this one prepared again."""
    if source.kind == "hub":
        slug = source.spec.replace("/", "_")
    else:
        slug = Path(source.path).stem if source.path else "data"
    if source.text_column != "text":
        slug += f"-{source.text_column}"
    fp = source.fingerprint()[:8]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{tokenizer_name}-{slug}").strip("._-")[:64 - 9] or "data"
    return f"{name}-{fp}"


# --- prepare ---------------------------------------------------------------------------------

def _flatten(ids: list[list[int]], docs: list[str], dtype: np.dtype) -> tuple[np.ndarray, int]:
    flat = np.concatenate([np.asarray(seq, dtype=dtype) for seq in ids])
    return flat, sum(len(d.encode("utf-8")) for d in docs)


def _chunks(docs: Iterator[str]) -> Iterator[tuple[list[str], int]]:
    buf, size = [], 0
    for d in docs:
        buf.append(d)
        size += len(d)
        if size >= CHUNK_BYTES:
            yield buf, size
            buf, size = [], 0
    if buf:
        yield buf, size


def prepare_data(
    ws: Workspace,
    tokenizer_name: str,
    source_spec: str,
    text_column: str = "text",
    name: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel_event: threading.Event | None = None,
    replace: bool = False,
) -> DataInfo:
    """Tokenize a source into ``data/<name>/``; returns the prepared folder's info. A folder
    that already holds other data (another source or tokenizer) is refused unless ``replace``."""
    from workbench.locks import acquire

    tinfo = tokenizer_info(ws, tokenizer_name)
    tok = load_tokenizer(ws, tokenizer_name)
    source = resolve_source(source_spec, text_column)
    name = check_name("data", name or default_data_name(tokenizer_name, source))
    out = ws.data_path(name)
    ws.data_dir().mkdir(parents=True, exist_ok=True)
    with acquire(data_lock_path(ws, name), "preparing", f"data {name!r}"):
        if not replace and (out / META_FILE).is_file():
            try:
                old = read_data_info(out)
                same = _same(old, tok.sha256, source)
            except (WorkbenchError, KeyError, ValueError, TypeError):
                old, same = None, False
            if not same:
                what = old.meta["source"].get("description", "?") if old else "damaged data"
                raise WorkbenchError(f"data {name!r} already holds {what}; choose another name, or replace it "
                                     "(workbench data prepare --force)")
        existed = out.is_dir()
        try:
            return _prepare_locked(ws, tinfo, tok, source, name, out, workers, progress, cancel_event)
        except BaseException:
            # a failed first prepare leaves no empty folder behind (temps are cleaned below)
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            raise


def _prepare_locked(ws, tinfo, tok, source, name, out, workers, progress, cancel_event) -> DataInfo:
    tokenizer_name = tinfo.name
    out.mkdir(parents=True, exist_ok=True)
    fileio.remove_stale_temps(out)  # only a killed writer's: the lock keeps live ones out
    dtype = token_dtype(tok.vocab_size)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    t0 = time.monotonic()
    splits: dict[str, dict] = {}
    temps: dict[str, Path] = {}
    try:
        for split in SPLIT_FILES:
            tmp = out / f".{SPLIT_FILES[split]}{fileio.TMP_MARK}{os.getpid()}"
            temps[split] = tmp
            cuts = source.split_documents
            splits[split] = write_split(
                source, SOURCE_SPLIT[split], tmp, dtype, tok, workers, progress, cancel_event, split
            )
            splits[split]["split_documents"] = source.split_documents - cuts
            if splits[split]["documents"] == 0:
                raise WorkbenchError(f"the {SOURCE_SPLIT[split]} split of {source.describe()} has no documents")
        for split, tmp in temps.items():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        first = not (out / META_FILE).exists()
        try:
            for split, tmp in temps.items():
                os.replace(tmp, out / SPLIT_FILES[split])
            meta = {
                "version": META_VERSION,
                "tokenizer": {"name": tokenizer_name, "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                              "bos_id": tok.bos_id, "eos_id": tok.eos_id},
                "source": {**source.to_dict(), "description": source.describe()},
                "dtype": dtype.name,
                "splits": splits,
                "seconds": round(time.monotonic() - t0, 3),
                "threads": workers,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "tokenizer_path": str(tinfo.path),
            }
            fileio.write_json(out / META_FILE, meta)
        except BaseException:
            if first:  # token files without their meta.json are no data: a first prepare leaves none
                for fname in SPLIT_FILES.values():
                    (out / fname).unlink(missing_ok=True)
            raise
    except OSError as e:  # a full disk, a read-only folder: the data folder keeps what it held
        full = "the disk is full; free some space and prepare it again" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise WorkbenchError(f"cannot write data {name!r} in {str(out)!r}: {full}") from None
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()
    return read_data_info(out)


def write_split(source, src_split, tmp: Path, dtype, tok, workers, progress, cancel_event, label) -> dict:
    """Tokenize the documents of ``source``'s ``src_split`` into the token file ``tmp`` (each as
    BOS … EOS), ``workers`` threads encoding; its token, byte and document counts. Data prepare
    writes its splits with it, and `eval --data` its temporary file."""
    total = source.total_bytes(src_split)
    ntok = nbytes = ndocs = done_chars = 0
    last = 0.0
    pending = None

    def write(job) -> None:
        nonlocal ntok, nbytes, ndocs, done_chars, last
        fut, docs, size = job
        flat, b = _flatten(fut.result(), docs, dtype)
        f.write(flat.tobytes())
        ntok, nbytes, ndocs, done_chars = ntok + flat.size, nbytes + b, ndocs + len(docs), done_chars + size
        if progress and time.monotonic() - last > 0.2:
            last = time.monotonic()
            progress(label, done_chars, total, f"{ndocs:,} documents, {ntok:,} tokens")

    # sentencepiece releases the GIL while it encodes: the next chunk is encoded in the
    # background while this thread reads documents and converts and writes the previous one.
    with open(tmp, "wb") as f, ThreadPoolExecutor(1) as pool:
        for docs, size in _chunks(source.documents(src_split)):
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled("data preparation was cancelled; no token file was written")
            job = (pool.submit(tok.encode_batch, docs, True, True, workers), docs, size)
            if pending is not None:
                write(pending)
            pending = job
        if pending is not None:
            write(pending)
    if progress:
        progress(label, total or done_chars, total or done_chars, f"{ndocs:,} documents, {ntok:,} tokens")
    return {"file": SPLIT_FILES[label], "tokens": int(ntok), "bytes": nbytes, "documents": ndocs}


def ensure_prepared(
    ws: Workspace, tokenizer_name: str, source_spec: str, text_column: str = "text", **kw
) -> DataInfo:
    """The prepared data for this tokenizer and source, preparing it only if needed."""
    from workbench.locks import holder

    tok_sha = read_sha(ws, tokenizer_name)
    source = resolve_source(source_spec, text_column)
    name = kw.pop("name", None) or default_data_name(tokenizer_name, source)
    path = ws.data_path(name)
    cancel = kw.get("cancel_event")
    while holder(data_lock_path(ws, name)) is not None:  # another process prepares it: wait, then use it
        if cancel is not None and cancel.is_set():
            raise Cancelled("data preparation was cancelled while waiting for another process")
        time.sleep(0.2)
    if (path / META_FILE).is_file():
        try:
            info = read_data_info(path)
            if _same(info, tok_sha, source):
                return info
        except (WorkbenchError, KeyError, ValueError, TypeError):
            pass
    return prepare_data(ws, tokenizer_name, source_spec, text_column, name=name, replace=True, **kw)


def _same(info: DataInfo, tok_sha: str, source: Source) -> bool:
    return (info.meta["tokenizer"]["sha256"] == tok_sha
            and info.meta["source"].get("fingerprint") == source.fingerprint())
