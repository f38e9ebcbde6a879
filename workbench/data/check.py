"""The `data check` verb: read a local source end to end and report every problem, changing
nothing.

What it finds, each with the file and the byte offset (and the line, for JSON lines):

- bytes that are not UTF-8, and NUL bytes (a binary file);
- empty documents: a ``<|endoftext|>`` line right after another, or one holding only whitespace;
- a .txt of more than one paragraph with no ``<|endoftext|>`` line at all: the whole file would
  be one document;
- a line over 1 MiB: far more than its line count suggests (training cuts such text into pieces);
- in JSON lines: a line that is not JSON, not an object, without the text column, or whose text
  is not a string or is empty; in a .json file, the same for its records;
- in a parquet file: a missing text column, and empty or null texts.

It also counts the character set of the text it reads (documents, not separators): how many
distinct characters, the share outside ASCII, the least frequent ones, and control characters
other than newline and tab — what a character-level tokenizer will have to hold, and where odd
bytes hide.

``check_source`` returns a ``CheckReport``; the CLI prints one line per problem and exits 1 when
there is any. A hub dataset is not read here (it is checked as it streams in `data prepare`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.data.sources import ALL_EXTS, EOT_LINE, data_files, is_saved_dataset
from workbench.errors import WorkbenchError

LONG_LINE = 1 << 20  # bytes
SHOWN_PER_KIND = 20  # problems of one kind listed per file; the rest are counted


@dataclass
class Problem:
    path: str
    offset: int | None  # byte offset in the file
    what: str
    line: int | None = None  # 1-based, where lines mean something (JSON lines)

    def text(self) -> str:
        where = self.path + (f":{self.line}" if self.line is not None else "")
        return f"{where}: byte {self.offset:,}: {self.what}" if self.offset is not None else f"{where}: {self.what}"


@dataclass
class CheckReport:
    source: str
    files: list[str] = field(default_factory=list)
    documents: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    more: dict[str, int] = field(default_factory=dict)  # "path: kind" -> problems not listed
    chars: Counter = field(default_factory=Counter)  # every character of the documents read

    @property
    def clean(self) -> bool:
        return not self.problems

    def charset(self, rare: int = 10) -> dict:
        """The character set: distinct characters, their total, the share outside ASCII, the
        ``rare`` least frequent (fewest first, then by code point) and the control characters
        (other than newline, tab and carriage return) with their counts."""
        total = sum(self.chars.values())
        non_ascii = sum(n for c, n in self.chars.items() if ord(c) > 127)
        order = sorted(self.chars.items(), key=lambda kv: (kv[1], kv[0]))
        control = {c: n for c, n in sorted(self.chars.items()) if (ord(c) < 32 and c not in "\n\t\r") or ord(c) == 127}
        return {"distinct": len(self.chars), "characters": total, "non_ascii_share": non_ascii / total if total else 0.0,
                "rarest": [[c, n] for c, n in order[:rare]], "control": [[c, n] for c, n in control.items()]}

    def to_dict(self) -> dict:
        return {"source": self.source, "files": self.files, "documents": self.documents, "bytes": self.bytes,
                "problems": [p.__dict__ for p in self.problems], "not_listed": self.more, "clean": self.clean,
                "charset": self.charset()}


class _Sink:
    """Problems of one file, at most ``SHOWN_PER_KIND`` of each kind listed."""

    def __init__(self, report: CheckReport, path: Path):
        self.report, self.path, self.seen = report, str(path), {}

    def add(self, kind: str, what: str, offset: int | None, line: int | None = None) -> None:
        n = self.seen[kind] = self.seen.get(kind, 0) + 1
        if n <= SHOWN_PER_KIND:
            self.report.problems.append(Problem(self.path, offset, what, line))
        else:
            key = f"{self.path}: {kind}"
            self.report.more[key] = self.report.more.get(key, 0) + 1


def check_source(spec: str, text_column: str = "text", progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Every problem in a local file or folder of data files (see the module); ``progress(done,
    total)`` hears bytes read."""
    path = Path(str(spec)).expanduser()
    if not path.exists():
        raise WorkbenchError(f"--data {spec!r}: no such file or folder; `data check` reads local files (a hub "
                             "dataset is checked as `data prepare` streams it)")
    path = path.resolve()
    if path.is_dir():
        if is_saved_dataset(path):
            raise WorkbenchError(f"{str(path)!r} is a saved datasets folder; `data check` reads .txt, .jsonl, "
                                 ".json and .parquet files")
        files = data_files(path)
    else:
        if path.suffix.lower() not in ALL_EXTS:
            raise WorkbenchError(f"{str(path)!r}: unsupported file type {path.suffix or '(none)'!r}; allowed: "
                                 ".txt, .jsonl, .json, .parquet")
        files = [path]
    report = CheckReport(source=str(spec), files=[str(f) for f in files])
    total = sum(f.stat().st_size for f in files if f.exists())
    done = 0
    for f in files:
        sink = _Sink(report, f)
        ext = f.suffix.lower()
        try:
            if f.stat().st_size == 0:
                sink.add("empty", "the file is empty", None)
            elif ext == ".txt":
                _check_txt(f, sink, report)
            elif ext == ".parquet":
                _check_parquet(f, text_column, sink, report)
            else:
                _check_json(f, text_column, sink, report)
            done += f.stat().st_size
        except OSError as e:  # unreadable, or gone while read: a problem of that file, the others go on
            sink.add("read", f"cannot read it: {e.strerror or e}", None)
        report.bytes = done
        if progress is not None:
            progress(done, total)
    return report


def _check_txt(path: Path, sink: _Sink, report: CheckReport) -> None:
    offset = 0
    doc_start, doc_bytes, doc_blank = 0, 0, True
    separators = paragraphs = 0
    previous_blank = True
    with open(path, "rb") as f:
        for line in iter(lambda: f.readline(LONG_LINE + 1), b""):
            if len(line) > LONG_LINE and not line.endswith(b"\n"):
                sink.add("long line", f"a line of more than {LONG_LINE:,} bytes (training cuts it into pieces; is "
                                      "this file one text without line breaks?)", offset)
                rest = 0
                while line:  # to the end of that line, a piece at a time
                    _check_bytes(path, line, sink, offset + rest, piece=True)
                    rest += len(line)
                    if line.endswith(b"\n"):
                        break
                    line = f.readline(LONG_LINE + 1)
                offset += rest
                doc_blank = False
                doc_bytes += rest
                continue
            if b"\x00" in line:
                sink.add("nul", "a NUL byte: this looks like a binary file, not UTF-8 text", offset + line.index(b"\x00"))
            _check_bytes(path, line, sink, offset)
            if line.strip() != EOT_LINE:
                report.chars.update(line.decode("utf-8", errors="ignore"))
            if line.strip() == EOT_LINE:
                separators += 1
                if doc_blank:
                    sink.add("empty document", "an empty document (nothing since the last separator)", doc_start)
                else:
                    report.documents += 1
                doc_start, doc_bytes, doc_blank = offset + len(line), 0, True
            else:
                blank = not line.strip()
                if not blank and previous_blank:
                    paragraphs += 1
                previous_blank = blank
                doc_blank = doc_blank and blank
                doc_bytes += len(line)
            offset += len(line)
    if not doc_blank:
        report.documents += 1
    if separators == 0 and paragraphs > 1:
        sink.add("no separators", f"no {EOT_LINE.decode()} line in {paragraphs:,} paragraphs: the whole file would "
                                  "be one document (training cuts it at blank lines past 1 MB)", None)


def _check_bytes(path, line: bytes, sink: _Sink, offset: int, piece: bool = False) -> None:
    """``piece``: a part of a longer line, whose first and last characters may be cut."""
    lead = 0
    while piece and lead < min(3, len(line)) and line[lead] & 0xC0 == 0x80:
        lead += 1
    try:
        line[lead:].decode("utf-8")
    except UnicodeDecodeError as e:
        if piece and e.start >= len(line) - lead - 4 and e.reason == "unexpected end of data":
            return
        sink.add("utf-8", f"byte 0x{line[lead + e.start]:02x} is not UTF-8", offset + lead + e.start)


def _check_json(path: Path, text_column: str, sink: _Sink, report: CheckReport) -> None:
    if path.suffix.lower() == ".json":
        raw = path.read_bytes()
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            sink.add("utf-8", f"byte 0x{raw[e.start]:02x} is not UTF-8", e.start)
            return
        except ValueError as e:
            if "Extra data" in str(e):  # JSON lines in a .json file
                _check_jsonl(path, text_column, sink, report)
                return
            sink.add("json", f"not JSON ({e})", getattr(e, "pos", None))
            return
        records = value if isinstance(value, list) else value.get("data") if isinstance(value, dict) else None
        if not isinstance(records, list):
            sink.add("json", "expected a list of records (or {\"data\": [...]})", 0)
            return
        for i, rec in enumerate(records):
            _check_record(rec, text_column, sink, report, None, f"record {i}: ")
        return
    _check_jsonl(path, text_column, sink, report)


def _check_jsonl(path: Path, text_column: str, sink: _Sink, report: CheckReport) -> None:
    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            here = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                sink.add("utf-8", f"byte 0x{line[e.start]:02x} is not UTF-8", here + e.start, number)
                continue
            except ValueError as e:
                sink.add("json", f"not JSON ({str(e).split(':')[0]})", here, number)
                continue
            _check_record(rec, text_column, sink, report, here, "", number)


def _check_record(rec, text_column: str, sink: _Sink, report: CheckReport, offset, prefix: str,
                  line: int | None = None) -> None:
    if not isinstance(rec, dict):
        sink.add("record", f"{prefix}{_json_kind(rec)}, not an object with a {text_column!r} field", offset, line)
    elif text_column not in rec:
        sink.add("column", f"{prefix}no {text_column!r} field (it has {', '.join(list(rec)[:5]) or 'none'})",
                 offset, line)
    elif not isinstance(rec[text_column], str):
        sink.add("type", f"{prefix}{text_column!r} is {_json_kind(rec[text_column])}, not text", offset, line)
    elif not rec[text_column].strip():
        sink.add("empty document", f"{prefix}an empty {text_column!r}", offset, line)
    else:
        report.documents += 1
        report.chars.update(rec[text_column])


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    return {int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), "not text")


def _check_parquet(path: Path, text_column: str, sink: _Sink, report: CheckReport) -> None:
    try:
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
    except Exception as e:  # pyarrow raises several types for damaged files
        sink.add("parquet", f"not a readable parquet file ({str(e).splitlines()[0][:120]})", None)
        return
    if text_column not in names:
        sink.add("column", f"no column {text_column!r} (its columns: {', '.join(names)})", None)
        return
    row = 0
    for batch in table.iter_batches(columns=[text_column]):
        for value in batch.column(0).to_pylist():
            if not isinstance(value, str) or not value.strip():
                sink.add("empty document", f"row {row}: {'null' if value is None else 'an empty text'}", None)
            else:
                report.documents += 1
                report.chars.update(value)
            row += 1
