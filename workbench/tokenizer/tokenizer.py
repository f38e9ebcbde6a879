"""Character-pair BPE tokenizers built with sentencepiece.

The base alphabet is the characters of the corpus sample, and merges join the most frequent
adjacent pairs (sentencepiece ``model_type=bpe``). Lossless by default: identity normalisation,
no whitespace cleanup, no dummy prefix, byte fallback, so ``decode(encode(s)) == s`` for any
string — newlines, runs of spaces, emoji, and even a literal ``▁`` (sentencepiece's own space
marker, which we route through byte pieces).

A tokenizer folder ``tokenizers/<name>/`` holds ``tokenizer.model``, ``settings.yaml`` (what it
was built with) and ``stats.json`` (alphabet size, bytes and chars per token on held-out text,
build seconds). Building runs in a child process (see :mod:`workbench.tokenizer.build`) so it
can be cancelled and never blocks the caller.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from workbench.config.overrides import fit_vocab
from workbench.errors import WorkbenchError, not_found
from workbench.fileio import read_json, read_text
from workbench.workspace import Workspace

SPACE_MARK = "\u2581"  # sentencepiece's visible space, "▁"
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
N_SPECIALS = 4
N_BYTE_PIECES = 256
MAX_VOCAB = 32768
MODEL_FILE = "tokenizer.model"
SETTINGS_FILE = "settings.yaml"
STATS_FILE = "stats.json"


# The build settings' numeric limits, in one place: (type, lowest, highest, lowest excluded,
# the words shown). TokenizerSettings.validate and the form's parser (build.parse_setting) use them.
LIMITS = {
    "vocab_size": (int, N_SPECIALS + 1, MAX_VOCAB, False, f"an integer from {N_SPECIALS + 1} to {MAX_VOCAB}"),
    "sample_mb": (float, 0, 4096, True, "a number above 0, up to 4096"),
    "character_coverage": (float, 0.9, 1.0, False, "a number from 0.9 to 1.0"),
}


def within_limits(name: str, value) -> bool:
    """Whether ``value`` is allowed for the build setting ``name`` (``LIMITS``)."""
    kind, lo, hi, lo_excluded, _ = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        return False
    return (lo < value if lo_excluded else lo <= value) and value <= hi


def min_vocab_size(alphabet_size: int, byte_fallback: bool) -> int:
    """The smallest vocab sentencepiece accepts: specials + every character (+ 256 byte pieces)."""
    return N_SPECIALS + alphabet_size + (N_BYTE_PIECES if byte_fallback else 0)


@dataclass
class TokenizerSettings:
    """How a tokenizer is built. Every field is recorded in ``settings.yaml``."""

    vocab_size: int = 4096
    byte_fallback: bool = True
    sample_mb: float = 50.0
    split_digits: bool = True
    character_coverage: float = 1.0
    data: str = ""
    text_column: str = "text"

    def validate(self) -> "TokenizerSettings":
        for name in LIMITS:
            value = getattr(self, name)
            if not within_limits(name, value):
                raise WorkbenchError(f"{name} {value!r} is out of range: allowed {LIMITS[name][4]}")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TokenizerInfo:
    """A built tokenizer on disk: its name, folder, settings and stats."""

    name: str
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def read_info(path: Path) -> TokenizerInfo:
    import yaml

    path = Path(path)
    if not (path / MODEL_FILE).is_file():
        raise WorkbenchError(f"{str(path)!r} is not a tokenizer folder (no {MODEL_FILE})")
    settings, stats = {}, {}
    if (path / SETTINGS_FILE).is_file():
        try:
            settings = yaml.safe_load(read_text(path / SETTINGS_FILE)) or {}
        except yaml.YAMLError as e:
            raise WorkbenchError(f"{str(path / SETTINGS_FILE)!r} is damaged (not YAML: {str(e).splitlines()[0]})") from None
    if (path / STATS_FILE).is_file():
        stats = read_json(path / STATS_FILE)
    if not isinstance(settings, dict) or not isinstance(stats, dict):
        raise WorkbenchError(f"tokenizer folder {str(path)!r} is damaged: its {SETTINGS_FILE} or {STATS_FILE} "
                             "is not a mapping")
    return TokenizerInfo(name=path.name, path=path, settings=settings, stats=stats)


def list_tokenizers(ws: Workspace) -> list[TokenizerInfo]:
    root = ws.tokenizers_dir()
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and (p / MODEL_FILE).is_file():
            out.append(read_info(p))
    return out


def tokenizer_info(ws: Workspace, name: str) -> TokenizerInfo:
    path = ws.tokenizer_path(name)
    if not (path / MODEL_FILE).is_file():
        raise not_found("tokenizer", name, ws.tokenizers_dir(), [t.name for t in list_tokenizers(ws)],
                        "built tokenizers", "no tokenizers are built yet",
                        "; build one with `workbench tokenizer build`")
    return read_info(path)


def load_tokenizer(ws: Workspace, name: str) -> "Tokenizer":
    return Tokenizer.load(tokenizer_info(ws, name).model_path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Tokenizer:
    """A loaded sentencepiece model with lossless encode/decode and display helpers."""

    def __init__(self, model_proto: bytes, path: Path | None = None):
        import sentencepiece as spm

        self.path = path
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.sp.vocab_size()
        self.unk_id, self.bos_id = self.sp.unk_id(), self.sp.bos_id()
        self.eos_id, self.pad_id = self.sp.eos_id(), self.sp.pad_id()
        # Byte pieces for the UTF-8 bytes of a literal "▁" (absent without byte fallback).
        ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_MARK.encode("utf-8")]
        self._mark_ids = ids if all(self.sp.is_byte(i) for i in ids) else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        try:
            proto = path.read_bytes()
        except OSError as e:
            raise WorkbenchError(f"cannot read tokenizer {str(path)!r}: {e.strerror}") from None
        if not proto:
            raise WorkbenchError(f"tokenizer {str(path)!r} is empty (a damaged or interrupted copy)")
        try:
            return cls(proto, path)
        except Exception as e:  # sentencepiece raises several types for a damaged model
            first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise WorkbenchError(f"{str(path)!r} is not a valid sentencepiece model ({first})") from None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()

    @property
    def byte_fallback(self) -> bool:
        return self._mark_ids is not None

    @cached_property
    def normalizer(self) -> dict[str, Any]:
        """How the model treats text before it encodes: ``add_dummy_prefix`` (a space added in
        front, as Llama's tokenizer does; ours have none) and ``remove_extra_whitespaces``. A
        foreign tokenizer (``workbench import``) keeps its own, and exports write them out."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(self.model_proto)
        n = m.normalizer_spec
        return {"add_dummy_prefix": n.add_dummy_prefix, "remove_extra_whitespaces": n.remove_extra_whitespaces}

    @property
    def specials(self) -> dict[str, int]:
        return {"unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id}

    # --- encode / decode ---------------------------------------------------------------------

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        if SPACE_MARK in text and self._keeps_marks:
            ids = self._encode_with_marks(text)
        else:
            ids = self.sp.encode(text)
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(
        self, texts: list[str], bos: bool = False, eos: bool = False, num_threads: int = 1
    ) -> list[list[int]]:
        out = self.sp.encode(texts, add_bos=bos, add_eos=eos, num_threads=num_threads)
        if self._keeps_marks:
            for i, t in enumerate(texts):
                if SPACE_MARK in t:
                    out[i] = self.encode(t, bos=bos, eos=eos)
        return out

    @cached_property
    def _keeps_marks(self) -> bool:
        # a tokenizer with a dummy prefix (Llama's) reads "▁" as a space, as its own readers do;
        # encoding the parts apart would give each one a prefix of its own
        return self._mark_ids is not None and not self.normalizer["add_dummy_prefix"]

    def _encode_with_marks(self, text: str) -> list[int]:
        # sentencepiece reads a literal "▁" as a space; encode it as its UTF-8 byte pieces,
        # which decode back to "▁" itself.
        ids: list[int] = []
        for i, part in enumerate(text.split(SPACE_MARK)):
            if i:
                ids.extend(self._mark_ids)
            if part:
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def decode_after(self, ids) -> str:
        """The text ``ids`` add after text already decoded (streaming). The same as ``decode``
        for ours; a tokenizer with a dummy prefix (Llama's) drops the space of the first piece
        in ``decode``, which in the middle of a text is a real one: decoded behind an anchor
        piece, then the anchor's text taken off."""
        if self._anchor is None:
            return self.decode(ids)
        anchor, text = self._anchor
        out = self.sp.decode([anchor, *(int(i) for i in ids)])
        return out[len(text):] if out.startswith(text) else self.decode(ids)

    @cached_property
    def _anchor(self) -> tuple[int, str] | None:
        n = self.normalizer
        if not (n["add_dummy_prefix"] or n["remove_extra_whitespaces"]):
            return None
        sp = self.sp
        for i in range(self.vocab_size):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i):
                continue
            text = sp.decode([i])
            if text and not text[0].isspace() and not sp.id_to_piece(i).startswith(SPACE_MARK):
                return i, text
        return None

    # --- display -----------------------------------------------------------------------------

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def surface(self, i: int) -> str:
        """What a single token stands for, printable: spaces for ▁, ``<0xE2>`` for byte pieces."""
        i = int(i)
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i) or self.sp.is_control(i) or self.sp.is_unknown(i):
            return piece
        return piece.replace(SPACE_MARK, " ")

    def pieces(self, text: str) -> list[tuple[int, str]]:
        """The tokens of ``text`` as (id, surface string) pairs, for display."""
        return [(i, self.surface(i)) for i in self.encode(text)]

    def vocab(self) -> list[dict[str, Any]]:
        """Every piece in id order; for BPE, normal pieces come in merge order."""
        sp = self.sp
        out = []
        for i in range(self.vocab_size):
            kind = (
                "control" if sp.is_control(i) else "unknown" if sp.is_unknown(i)
                else "byte" if sp.is_byte(i) else "normal"
            )
            out.append({"id": i, "piece": sp.id_to_piece(i), "surface": self.surface(i), "kind": kind, "score": sp.get_score(i)})
        return out


def fit_config(ws: Workspace, cfg, name: str, pinned: bool = False):
    """``cfg`` with ``model.vocab_size`` set to tokenizer ``name``'s, and the notice saying so
    (None when it already matched): the one rule ``train``, ``sweep`` and ``config show`` use.
    ``pinned``: the user set vocab_size, so a mismatch is refused instead (``fit_vocab``)."""
    return fit_vocab(cfg, name, load_tokenizer(ws, name).vocab_size, pinned)
