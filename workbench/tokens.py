"""Pretokenized data: token files written once, read as random windows or sequential passes.

``prepare_data`` streams a source's documents in chunks and encodes each chunk as
``bos + tokens + eos`` per document with sentencepiece's own thread pool (one thread per core;
it scales better here than worker processes, which pay for pickling). The ids go to ``train.bin``
and ``val.bin`` (``uint16``, or ``uint32`` past 65,535) under temporary names that are renamed
into place at the end, with ``meta.json`` written last. Memory stays bounded: one chunk at a time.

``TokenFile`` reads each batch's windows with ``os.pread`` on a file opened for that batch (a
long-lived memmap grows the process's resident memory as pages are touched; a memmap per batch
costs more than the reads: 170 against 40 us a batch at 8 x 64). Where there is no ``pread``
(Windows) a memmap per batch does the same.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import fileio
from .data import Source, resolve_source
from .errors import Cancelled, WorkbenchError
from .tokenizer import load_tokenizer, tokenizer_info
from .workspace import Workspace, check_name

META_FILE = "meta.json"
SPLIT_FILES = {"train": "train.bin", "val": "val.bin"}
SOURCE_SPLIT = {"train": "train", "val": "validation"}
CHUNK_BYTES = 1 << 19  # text per worker task
META_VERSION = 1

ProgressFn = Callable[[str, float, float | None, str], None]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


@dataclass
class TokenFile:
    """A flat file of token ids."""

    path: Path
    dtype: np.dtype
    n_tokens: int

    def __len__(self) -> int:
        return self.n_tokens

    def _open(self) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))

    def read_windows(self, starts, n: int) -> np.ndarray:
        """Rows of ``n`` tokens from each start, as int64 ``(len(starts), n)``."""
        if not hasattr(os, "pread"):
            mm = self._open()
            out = np.stack([mm[s:s + n] for s in starts]).astype(np.int64)
            del mm
            return out
        size = self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            rows = [os.pread(fd, n * size, int(s) * size) for s in starts]
        finally:
            os.close(fd)
        if any(len(r) != n * size for r in rows):
            raise WorkbenchError(f"{str(self.path)!r} is shorter than its meta.json says; prepare the data again")
        return np.frombuffer(b"".join(rows), dtype=self.dtype).reshape(len(rows), n).astype(np.int64)

    def check_window(self, T: int) -> None:
        if self.n_tokens < T + 1:
            raise WorkbenchError(
                f"{str(self.path)!r} holds {self.n_tokens} tokens, fewer than one window of "
                f"max_seq_len + 1 = {T + 1}; use more data or a shorter max_seq_len"
            )

    def sample_batch(self, B: int, T: int, rng: np.random.Generator) -> np.ndarray:
        """``B`` random windows of ``T + 1`` tokens as int64 ``(B, T+1)``."""
        self.check_window(T)
        starts = rng.integers(0, self.n_tokens - T, size=B)
        return self.read_windows(starts, T + 1)

    def n_windows(self, T: int) -> int:
        return max(0, (self.n_tokens - 1) // T)

    def windows(self, B: int, T: int, max_batches: int | None = None) -> Iterator[np.ndarray]:
        """Sequential, non-overlapping windows (each token is a target exactly once), in
        batches of up to ``B`` rows of ``T + 1`` tokens; for evaluation."""
        self.check_window(T)
        n = self.n_windows(T)
        done = 0
        for start in range(0, n, B):
            if max_batches is not None and done >= max_batches:
                return
            rows = range(start, min(n, start + B))
            done += 1
            yield self.read_windows([r * T for r in rows], T + 1)


@dataclass
class DataInfo:
    """A prepared data folder: ``meta.json`` plus the token files it describes."""

    name: str
    path: Path
    meta: dict

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    def split(self, split: str) -> TokenFile:
        s = self.meta["splits"][split]
        return TokenFile(self.path / SPLIT_FILES[split], self.dtype, int(s["tokens"]))

    @property
    def train(self) -> TokenFile:
        return self.split("train")

    @property
    def val(self) -> TokenFile:
        return self.split("val")

    def bytes_per_token(self, split: str = "val") -> float:
        s = self.meta["splits"][split]
        return s["bytes"] / max(1, s["tokens"])

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), **self.meta}


def read_data_info(path: Path) -> DataInfo:
    import json

    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise WorkbenchError(f"{str(path)!r} is not a prepared data folder (no {META_FILE}); run `workbench data prepare`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    info = DataInfo(name=Path(path).name, path=Path(path), meta=meta)
    for split, fname in SPLIT_FILES.items():
        f = info.path / fname
        want = int(meta["splits"][split]["tokens"]) * info.dtype.itemsize
        have = f.stat().st_size if f.exists() else -1
        if have != want:
            raise WorkbenchError(
                f"{str(f)!r} does not match {META_FILE} ({have} bytes, expected {want}); "
                "prepare the data again"
            )
    return info


def list_data(ws: Workspace) -> list[DataInfo]:
    root = ws.data_dir()
    out = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and (p / META_FILE).is_file():
                try:
                    out.append(read_data_info(p))
                except (WorkbenchError, KeyError, ValueError):
                    continue
    return out


def data_info(ws: Workspace, name: str) -> DataInfo:
    path = ws.data_path(name)
    if not (path / META_FILE).is_file():
        names = [d.name for d in list_data(ws)]
        have = f"prepared: {', '.join(names)}" if names else "nothing is prepared yet"
        raise WorkbenchError(f"data {name!r} not found in {str(ws.data_dir())!r} ({have})")
    return read_data_info(path)


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


def data_lock_path(ws: Workspace, name: str) -> Path:
    return ws.data_dir() / f".{name}.lock"


def run_data(ws: Workspace, run_name: str, recorded: dict, tok_sha: str) -> DataInfo:
    """The prepared data a run trained on (``recorded``: its config's data section), checked to
    still be that data and to match the run's tokenizer; resume and eval both read it here."""
    who = f"run {run_name!r}"
    try:
        info = data_info(ws, recorded["name"])
    except (KeyError, TypeError, WorkbenchError):
        raise WorkbenchError(
            f"{who} was trained on data {recorded.get('name')!r}, which is missing from {str(ws.data_dir())!r}; "
            f"prepare it again from the same source: workbench data prepare --tokenizer {recorded.get('tokenizer')} "
            f"--data {recorded.get('source')} --name {recorded.get('name')}") from None
    if info.meta["tokenizer"]["sha256"] != tok_sha:
        raise WorkbenchError(f"data {info.name!r} was made with another tokenizer than {who}")
    check_matches(info, recorded, who)
    return info


def check_matches(info: DataInfo, recorded: dict, who: str) -> None:
    """Refuse data that is not what ``who`` (a run) was trained on: ``recorded`` is the run's
    data section (fingerprint and token counts when it was made)."""
    fp = recorded.get("fingerprint")
    have = info.meta.get("source", {}).get("fingerprint")
    if fp and have and fp != have:
        raise WorkbenchError(
            f"data {info.name!r} no longer holds what {who} was trained on: it was prepared from "
            f"{info.meta['source'].get('description', '?')} (fingerprint {have}), the run trained on "
            f"{recorded.get('source', '?')} (fingerprint {fp}); prepare that source again under another name")
    want = recorded.get("train_tokens")
    if want is not None and want != info.meta["splits"]["train"]["tokens"]:
        raise WorkbenchError(
            f"data {info.name!r} holds {info.meta['splits']['train']['tokens']:,} training tokens, but {who} was "
            f"trained on {want:,}: it was prepared again from other text")


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
    from .locks import acquire

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
            splits[split] = _write_split(
                source, SOURCE_SPLIT[split], tmp, dtype, tok, workers, progress, cancel_event, split
            )
            splits[split]["split_documents"] = source.split_documents - cuts
            if splits[split]["documents"] == 0:
                raise WorkbenchError(f"the {SOURCE_SPLIT[split]} split of {source.describe()} has no documents")
        for split, tmp in temps.items():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
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
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()
    return read_data_info(out)


def _write_split(source, src_split, tmp: Path, dtype, tok, workers, progress, cancel_event, label) -> dict:
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
    from .locks import holder

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


def read_sha(ws: Workspace, tokenizer_name: str) -> str:
    from .tokenizer import file_sha256

    return file_sha256(tokenizer_info(ws, tokenizer_name).model_path)
