"""Pretokenized data: token files (written by ``data.prepare``), read as random windows or
sequential passes, and their ``meta.json`` (tokenizer hash, token and byte counts).

The ids are in ``train.bin`` and ``val.bin`` (``uint16``, or ``uint32`` past 65,535).

``TokenFile`` reads each batch's windows with ``os.pread`` on a file opened for that batch (a
long-lived memmap grows the process's resident memory as pages are touched; a memmap per batch
costs more than the reads: 170 against 40 us a batch at 8 x 64). Where there is no ``pread``
(Windows) a memmap per batch does the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from workbench.errors import WorkbenchError, not_found
from workbench.fileio import read_json
from workbench.tokenizer.tokenizer import tokenizer_info
from workbench.workspace import Workspace

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

    def check_ids(self, vocab_size: int, chunk: int = 1 << 24) -> None:
        """Refuse a file holding an id the model has no embedding for (a damaged file, or one
        made with another tokenizer), naming the file and the first bad offset; read in chunks."""
        mm = self._open()
        try:
            for start in range(0, self.n_tokens, chunk):
                part = mm[start:start + chunk]
                if part.size and int(part.max()) >= vocab_size:
                    at = start + int(np.argmax(part >= vocab_size))
                    raise WorkbenchError(
                        f"{str(self.path)!r} holds token id {int(mm[at])} at token {at:,} (byte offset {at * self.dtype.itemsize:,}), outside the "
                        f"vocabulary of {vocab_size:,}: the file is damaged or from another tokenizer; prepare the "
                        "data again")
        finally:
            del mm

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

    def check_ids(self, vocab_size: int) -> None:
        """Every split's ids are below ``vocab_size`` (``TokenFile.check_ids``)."""
        for split in SPLIT_FILES:
            self.split(split).check_ids(vocab_size)

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
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise WorkbenchError(f"{str(path)!r} is not a prepared data folder (no {META_FILE}); run `workbench data prepare`")
    meta = read_json(meta_path)
    try:
        info = DataInfo(name=Path(path).name, path=Path(path), meta=meta)
        sizes = {split: int(meta["splits"][split]["tokens"]) * info.dtype.itemsize for split in SPLIT_FILES}
        if not isinstance(meta["tokenizer"]["sha256"], str) or not isinstance(meta.get("source", {}), dict):
            raise ValueError("its tokenizer or source entry is malformed")
    except (KeyError, TypeError, ValueError) as e:
        raise WorkbenchError(f"{str(meta_path)!r} is damaged ({type(e).__name__}: {e}); prepare the data again") from None
    for split, fname in SPLIT_FILES.items():
        f = info.path / fname
        want = sizes[split]
        have = f.stat().st_size if f.exists() else -1
        if have != want:
            raise WorkbenchError(
                f"{str(f)!r} does not match {META_FILE} ({have} bytes, expected {want}); "
                "prepare the data again"
            )
    return info


def list_data(ws: Workspace, damaged: list[str] | None = None) -> list[DataInfo]:
    """The workspace's prepared data folders; a damaged one is left out, and its problem (one
    line naming the file) goes to ``damaged`` when the caller passes a list."""
    root = ws.data_dir()
    out = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and (p / META_FILE).is_file():
                try:
                    out.append(read_data_info(p))
                except WorkbenchError as e:
                    if damaged is not None:
                        damaged.append(str(e))
    return out


def data_info(ws: Workspace, name: str) -> DataInfo:
    path = ws.data_path(name)
    if not (path / META_FILE).is_file():
        raise not_found("data", name, ws.data_dir(), [d.name for d in list_data(ws)], "prepared",
                        "nothing is prepared yet")
    return read_data_info(path)


def data_lock_path(ws: Workspace, name: str) -> Path:
    return ws.data_dir() / f".{name}.lock"


def run_data(ws: Workspace, run_name: str, recorded: dict, tok_sha: str) -> DataInfo:
    """The prepared data a run trained on (``recorded``: its config's data section), checked to
    still be that data and to match the run's tokenizer; resume and eval both read it here."""
    who = f"run {run_name!r}"
    name = recorded.get("name") if isinstance(recorded, dict) else None
    if isinstance(recorded, dict) and recorded.get("tokenizer_sha256") and "name" not in recorded:
        raise WorkbenchError(f"{who} was not trained here (it was imported), so it has no data of its own; "
                             "evaluate it on your text with --data FILE, or train from it with --init-from")
    if isinstance(name, str) and (ws.data_path(name) / META_FILE).is_file():
        info = read_data_info(ws.data_path(name))  # there but damaged: say what is wrong with it
    else:
        raise WorkbenchError(
            f"{who} was trained on data {recorded.get('name')!r}, which is missing from {str(ws.data_dir())!r}; "
            f"prepare it again from the same source: workbench data prepare --tokenizer {recorded.get('tokenizer')} "
            f"--data {recorded.get('source')} --name {recorded.get('name')}")
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


def read_sha(ws: Workspace, tokenizer_name: str) -> str:
    from workbench.tokenizer.tokenizer import file_sha256

    return file_sha256(tokenizer_info(ws, tokenizer_name).model_path)
