"""Data sources: one notion of "where text comes from", used by every command that takes ``--data``.

A source spec is one of:
- a Hugging Face hub dataset id (default ``roneneldan/TinyStories``), streamed through
  ``datasets.load_dataset`` so the whole set never sits in RAM;
- a local ``.txt`` in the TinyStories raw format (stories separated by ``<|endoftext|>`` lines);
- a local ``.jsonl`` / ``.json`` / ``.parquet`` file with a text column (read through ``datasets``);
- a folder of such files (files named like ``*valid*``/``*val*`` form the validation split), or a
  folder written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

Every source yields documents (str) for a ``train`` and a ``validation`` split. A source with no
validation split holds out a deterministic fraction of its documents (every 100th, starting
with the second), so train and validation never share a document.

Bad input raises ``WorkbenchError`` with a one-line message: a missing path, an empty file, a
missing column, binary or non-UTF-8 input, an unreachable hub.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from workbench.errors import WorkbenchError

DEFAULT_HUB_ID = "roneneldan/TinyStories"
EOT_LINE = b"<|endoftext|>"
TEXT_EXTS = {".txt", ".jsonl", ".json"}
ALL_EXTS = TEXT_EXTS | {".parquet"}
SPLITS = ("train", "validation")
# Documents with index % HOLDOUT_STRIDE == 1 form the held-out validation split.
HOLDOUT_STRIDE = 100
# Memory stays bounded on any input shape: a .txt with no separators would otherwise become one
# huge document (and one 12 MB line took 50x its size to encode). Past MAX_DOC_BYTES a document
# is cut at the next blank line; past READ_LIMIT (a line with no break at all) at the last
# whitespace; and any document of any source longer than MAX_DOC_CHARS is cut at whitespace into
# pieces of at most that. ``Source.split_documents`` counts the cuts.
MAX_DOC_BYTES = 1 << 20
READ_LIMIT = 4 << 20
MAX_DOC_CHARS = 1 << 20
HUB_PROBE_SECONDS = 5.0

_VAL_RE = re.compile(r"(^|[-_.\s])(valid|validation|val)([-_.\s\d]|$)")
_TEST_RE = re.compile(r"(^|[-_.\s])(test|dev)([-_.\s\d]|$)")
_HUB_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

LOCAL_HINT = (
    "use a local copy instead: --data path/to/TinyStories-train.txt "
    "(or a .jsonl/.json/.parquet file, or a folder of them)"
)


def is_held_out(index: int) -> bool:
    return index % HOLDOUT_STRIDE == 1


@dataclass
class Source:
    """A resolved data source. Create with :func:`resolve_source`."""

    spec: str
    kind: str  # hub | local | saved
    text_column: str = "text"
    files: dict[str, list[Path]] = field(default_factory=dict)  # split -> files (local)
    path: Path | None = None
    split_documents: int = 0  # documents cut into pieces to keep memory bounded (so far)

    @property
    def has_validation(self) -> bool:
        if self.kind == "local":
            return bool(self.files.get("validation"))
        return True  # hub / saved: decided when opened (falls back to held-out)

    def describe(self) -> str:
        if self.kind == "hub":
            return f"hub dataset {self.spec} (column {self.text_column!r})"
        if self.kind == "saved":
            return f"saved dataset {self.path}"
        n = sum(len(v) for v in self.files.values())
        val = "its own validation files" if self.has_validation else "a held-out 1% for validation"
        return f"{self.path} ({n} file{'s' if n != 1 else ''}, {val})"

    def total_bytes(self, split: str) -> int | None:
        """Bytes on disk behind a split, for progress and ETA (None when unknown)."""
        if self.kind != "local":
            return None
        if split == "validation" and not self.has_validation:
            return sum(p.stat().st_size for p in self.files["train"]) // HOLDOUT_STRIDE
        return sum(p.stat().st_size for p in self.files.get(split, []))

    def documents(self, split: str = "train") -> Iterator[str]:
        """Yield the documents of a split, streaming (bounded memory)."""
        if split not in SPLITS:
            raise WorkbenchError(f"split {split!r} is not known; choose one of {', '.join(SPLITS)}")
        for doc in self._documents(split):
            if len(doc) <= MAX_DOC_CHARS:
                yield doc
                continue
            self.split_documents += 1
            yield from _cut_text(doc, MAX_DOC_CHARS)

    def _documents(self, split: str) -> Iterator[str]:
        if self.kind == "hub":
            yield from _hub_documents(self.spec, split, self.text_column)
        elif self.kind == "saved":
            yield from _saved_documents(self.path, split, self.text_column)
        elif self.has_validation:
            for p in self.files.get(split, []):
                yield from _file_documents(p, self.text_column, self)
        else:
            want_val = split == "validation"
            i = -1
            for p in self.files["train"]:
                for doc in _file_documents(p, self.text_column, self):
                    i += 1
                    if is_held_out(i) == want_val:
                        yield doc

    def to_dict(self) -> dict:
        # "id" names the data itself: the hub id, or the resolved local path.
        ident = self.spec if self.kind == "hub" else str(self.path)
        return {"spec": self.spec, "kind": self.kind, "text_column": self.text_column, "id": ident,
                "fingerprint": self.fingerprint()}

    def fingerprint(self) -> str:
        """A short hash of what the source is: its id and column, and for local files each
        file's path, size and modification time (another folder of the same name, or an edited
        file, gets another fingerprint). A hub dataset is named by its id alone."""
        import hashlib

        parts = [self.kind, self.spec if self.kind == "hub" else str(self.path), self.text_column]
        files: list[Path] = []
        if self.kind == "local":
            files = [p for split in SPLITS for p in self.files.get(split, [])]
        elif self.kind == "saved" and self.path is not None:
            files = sorted(p for p in self.path.rglob("*") if p.is_file())
        for p in files:
            try:
                st = p.stat()
                parts.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{p}|missing")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def resolve_source(spec: str | os.PathLike | None, text_column: str = "text") -> Source:
    """Turn a ``--data`` value into a Source, checking what can be checked without reading it all."""
    spec = str(spec) if spec not in (None, "") else DEFAULT_HUB_ID
    if not text_column:
        raise WorkbenchError("--text-column must not be empty")
    path = Path(spec).expanduser()
    if path.exists():
        return _resolve_local(spec, path, text_column)
    if _HUB_RE.match(spec) and path.suffix.lower() not in ALL_EXTS and not spec.startswith((".", "/")):
        # Fail here, within seconds, rather than deep inside datasets' retries.
        reason = hub_offline_reason(spec)
        if reason:
            raise WorkbenchError(f"cannot load hub dataset {spec!r}: {reason}; {LOCAL_HINT}")
        return Source(spec=spec, kind="hub", text_column=text_column)
    raise WorkbenchError(
        f"--data {spec!r}: no such file or folder. A data source is a hub dataset id "
        f"(like {DEFAULT_HUB_ID}) or a local .txt/.jsonl/.json/.parquet file or a folder of them"
    )


def is_saved_dataset(path: Path) -> bool:
    """A folder written by datasets' ``save_to_disk``."""
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def data_files(path: Path) -> list[Path]:
    """A folder's data files (hidden ones left out), unchecked; none is an error."""
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in ALL_EXTS
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise WorkbenchError(
            f"folder {str(path)!r} holds no data files; expected .txt, .jsonl, .json or "
            ".parquet files, or a folder written by datasets' save_to_disk"
        )
    return files


def _folder_files(path: Path, text_column: str) -> list[Path]:
    """A folder's data files, each given ``check_file``'s cheap checks."""
    files = data_files(path)
    for f in files:
        check_file(f, text_column)
    return files


EVAL_SPLITS = ("valid", "test")


def eval_source(spec: str | os.PathLike, text_column: str = "text", split: str | None = None) -> tuple[Source, str]:
    """What `eval --data` scores, and what to call it: a file whole; a folder's test files
    (``split`` test, the default when it has some; names with test or dev) or its validation
    files (valid); a hub or saved dataset's validation split. The documents come from the
    returned Source's ``validation`` split; no training files are needed."""
    if split is not None and split not in EVAL_SPLITS:
        raise WorkbenchError(f"--split {split!r} is not allowed: expected one of {', '.join(EVAL_SPLITS)}")
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.exists() and not (path.is_dir() and is_saved_dataset(path)):
        path = path.resolve()
        if path.is_file():
            if split is not None:
                raise WorkbenchError(f"--split {split}: a file is evaluated whole; --split picks the test or "
                                     "validation files of a folder")
            check_file(path, text_column)
            return Source(spec=spec, kind="local", text_column=text_column,
                          files={"train": [], "validation": [path]}, path=path), "all"
        files = _folder_files(path, text_column)
        val = [f for f in files if _VAL_RE.search(f.stem.lower())]
        test = [f for f in files if f not in val and _TEST_RE.search(f.stem.lower())]
        want = split or ("test" if test else "valid")
        chosen = test if want == "test" else val
        if not chosen:
            kind = "test or dev" if want == "test" else "valid, validation or val"
            raise WorkbenchError(f"folder {str(path)!r} has no {want} files (file names with {kind} in them); "
                                 f"it has {', '.join(f.name for f in files[:5])}")
        return Source(spec=spec, kind="local", text_column=text_column,
                      files={"train": [], "validation": chosen}, path=path), want
    if split == "test":
        raise WorkbenchError("--split test is for local files and folders: a hub or saved dataset is evaluated on "
                             "its validation split")
    return resolve_source(spec, text_column), "valid"


def _resolve_local(spec: str, path: Path, text_column: str) -> Source:
    path = path.resolve()
    if path.is_dir():
        if is_saved_dataset(path):
            return Source(spec=spec, kind="saved", text_column=text_column, path=path)
        files = _folder_files(path, text_column)
        split_files = _assign_splits(files)
        if not split_files["train"]:
            raise WorkbenchError(f"folder {str(path)!r} has validation files but no training files")
        return Source(spec=spec, kind="local", text_column=text_column, files=split_files, path=path)
    check_file(path, text_column)
    return Source(spec=spec, kind="local", text_column=text_column, files={"train": [path], "validation": []}, path=path)


def _assign_splits(files: list[Path]) -> dict[str, list[Path]]:
    val = [f for f in files if _VAL_RE.search(f.stem.lower())]
    test = [f for f in files if f not in val and _TEST_RE.search(f.stem.lower())]
    # Never train on test files: they become validation when there is nothing better, else stay out.
    train = [f for f in files if f not in val and f not in test]
    return {"train": train, "validation": val or test}


def check_file(path: Path, text_column: str = "text") -> None:
    """Cheap up-front checks on one local file; raises WorkbenchError with a one-line reason."""
    ext = path.suffix.lower()
    if ext not in ALL_EXTS:
        raise WorkbenchError(
            f"{str(path)!r}: unsupported file type {ext or '(none)'!r}; allowed: .txt, .jsonl, .json, .parquet"
        )
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise WorkbenchError(f"cannot read {str(path)!r}: {e.strerror}") from None
    if size == 0:
        raise WorkbenchError(f"{str(path)!r} is empty")
    if ext == ".parquet":
        if not head.startswith(b"PAR1"):
            raise WorkbenchError(f"{str(path)!r} is not a parquet file (missing the PAR1 header)")
        _check_parquet_column(path, text_column)
        return
    if b"\x00" in head:
        raise WorkbenchError(f"{str(path)!r} looks binary (it contains NUL bytes); expected UTF-8 text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut by the 64 KiB read is fine; anything earlier is not.
        if e.start < len(head) - 4:
            raise WorkbenchError(_utf8_message(path, e.start, head[e.start])) from None
    if not head.strip():
        raise WorkbenchError(f"{str(path)!r} holds only whitespace")


def _utf8_message(path: Path, offset: int, byte: int) -> str:
    return f"{str(path)!r} is not UTF-8 text (byte 0x{byte:02x} at offset {offset}); convert it to UTF-8 first"


def _check_parquet_column(path: Path, text_column: str) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except Exception as e:  # pyarrow raises several types for damaged files
        raise WorkbenchError(f"{str(path)!r} is not a readable parquet file: {e}") from None
    _require_column(path, text_column, names)


def _require_column(where, text_column: str, names) -> None:
    if text_column not in names:
        raise WorkbenchError(
            f"{str(where)!r} has no column {text_column!r}; its columns are: "
            f"{', '.join(map(str, names)) or '(none)'} (choose one with --text-column)"
        )


# --- readers ---------------------------------------------------------------------------------


def _cut_text(doc: str, limit: int) -> Iterator[str]:
    """Pieces of at most ``limit`` characters, cut after the last whitespace where there is one."""
    while len(doc) > limit:
        cut = max(doc.rfind(" ", 0, limit), doc.rfind("\n", 0, limit))
        cut = cut + 1 if cut > 0 else limit
        yield doc[:cut]
        doc = doc[cut:]
    if doc:
        yield doc


def _cut_bytes(raw: bytes, limit: int) -> int:
    """Where to cut UTF-8 ``raw`` at or before ``limit``: after the last whitespace, else at a
    character boundary."""
    cut = max(raw.rfind(b" ", 0, limit), raw.rfind(b"\n", 0, limit), raw.rfind(b"\t", 0, limit))
    if cut > 0:
        return cut + 1
    cut = limit
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # never inside a multi-byte character
        cut -= 1
    return cut or limit


def _file_documents(path: Path, text_column: str, source: "Source | None" = None) -> Iterator[str]:
    if path.suffix.lower() == ".txt":
        yield from _txt_documents(path, source)
    else:
        builder = "parquet" if path.suffix.lower() == ".parquet" else "json"
        yield from _datasets_documents(path, builder, text_column)


def _txt_documents(path: Path, source: "Source | None" = None) -> Iterator[str]:
    """Stories separated by ``<|endoftext|>`` lines; bytes are decoded strictly as UTF-8. Lines
    are read in pieces of at most 1 MiB, so no line of any length is held whole."""
    buf: list[bytes] = []
    size = 0
    offset = 0

    def flush(raw: bytes | None = None) -> str | None:
        raw = b"".join(buf) if raw is None else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = offset - size + e.start
            raise WorkbenchError(_utf8_message(path, bad, raw[e.start])) from None
        buf.clear()
        text = text.strip("\r\n")
        return text if text.strip() else None

    with open(path, "rb") as f:
        for line in iter(lambda: f.readline(1 << 20), b""):
            if size > READ_LIMIT:  # no separator and no blank line for megabytes: cut it
                raw = b"".join(buf)
                cut = _cut_bytes(raw, MAX_DOC_BYTES)
                doc = flush(raw[:cut])
                buf.append(raw[cut:])
                size = len(raw) - cut
                if source is not None:
                    source.split_documents += 1
                if doc is not None:
                    yield doc
            if b"\x00" in line:
                raise WorkbenchError(f"{str(path)!r} looks binary (NUL byte near offset {offset}); expected UTF-8 text")
            offset += len(line)
            if line.strip() == EOT_LINE:
                doc = flush()
                size = 0
                if doc is not None:
                    yield doc
                continue
            buf.append(line)
            size += len(line)
            if size > MAX_DOC_BYTES and not line.strip():
                doc = flush()
                size = 0
                if doc is not None:
                    yield doc
        doc = flush()
        if doc is not None:
            yield doc


def _import_datasets():
    import datasets

    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()
    return datasets


def _column_texts(rows, where, text_column: str) -> Iterator[str]:
    first = True
    for row in rows:
        if first:
            _require_column(where, text_column, list(row.keys()))
            first = False
        text = row[text_column]
        if text is None:
            continue
        if not isinstance(text, str):
            raise WorkbenchError(
                f"{str(where)!r}: column {text_column!r} holds {type(text).__name__} values, not text"
            )
        if text.strip():
            yield text


def _datasets_documents(path: Path, builder: str, text_column: str) -> Iterator[str]:
    datasets = _import_datasets()
    try:
        ds = datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True)
        yield from _column_texts(ds, path, text_column)
    except WorkbenchError:
        raise
    except UnicodeDecodeError as e:
        raise WorkbenchError(_utf8_message(path, e.start, e.object[e.start])) from None
    except Exception as e:  # datasets/pyarrow wrap parse errors in many types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WorkbenchError(f"cannot read {str(path)!r} as {builder}: {msg}") from None


def _pick_split(names: list[str], split: str) -> str | None:
    if split == "train":
        return "train" if "train" in names else None
    for cand in ("validation", "valid", "val", "test"):
        if cand in names:
            return cand
    return None


def split_stream(dsdict, split: str, where, text_column: str) -> Iterator[str]:
    names = list(dsdict.keys())
    if _pick_split(names, "validation") is not None:
        yield from _column_texts(dsdict[_pick_split(names, split) or names[0]], where, text_column)
        return
    # No validation split: hold out from train (or from the only split there is), both ways.
    base = dsdict["train"] if "train" in names else dsdict[names[0]]
    want_val = split == "validation"
    for i, doc in enumerate(_column_texts(base, where, text_column)):
        if is_held_out(i) == want_val:
            yield doc


def _saved_documents(path: Path, split: str, text_column: str) -> Iterator[str]:
    datasets = _import_datasets()
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise WorkbenchError(f"cannot load the saved dataset at {str(path)!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(ds, datasets.DatasetDict):
        ds = datasets.DatasetDict({"train": ds})
    yield from split_stream(ds, split, path, text_column)


def hub_offline_reason(hub_id: str, timeout: float | None = None) -> str | None:
    """Why the hub cannot be used right now (None when it looks reachable).

    The probe runs in a daemon thread so a hanging DNS lookup or a connection nobody answers
    cannot stall the caller beyond ``timeout`` (default ``HUB_PROBE_SECONDS``).
    """
    timeout = HUB_PROBE_SECONDS if timeout is None else timeout
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^\w+://", "", endpoint).split("/")[0]
    hostname, _, port = host.partition(":")
    result: list[str | None] = []

    def probe():
        try:
            socket.create_connection((hostname, int(port or 443)), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"cannot reach {hostname} ({e.strerror or type(e).__name__})")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0] if result else f"no answer from {hostname} within {timeout:g} s"


def _hub_documents(hub_id: str, split: str, text_column: str) -> Iterator[str]:
    datasets = _import_datasets()
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    try:
        dsdict = datasets.load_dataset(hub_id, streaming=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WorkbenchError(f"cannot load hub dataset {hub_id!r}: {msg}; {LOCAL_HINT}") from None
    yield from split_stream(dsdict, split, hub_id, text_column)
