"""A GGUF file's vocabulary as a sentencepiece model, for ``workbench import``.

llama.cpp's ``llama`` vocabulary (``tokenizer.ggml.model = "llama"``) is sentencepiece's: pieces
spelt with ``▁`` for a space, scores that rank the BPE merges, types numbered as sentencepiece
numbers them (normal 1, unknown 2, control 3, user-defined 4, unused 5, byte 6), the special ids
and two normaliser switches (``add_space_prefix``, ``remove_extra_whitespaces``). ``rebuild``
writes them into a sentencepiece ``ModelProto`` (``sentencepiece_model_pb2``), and ``check``
proves that model encodes and decodes text as the vocabulary itself does — as llama.cpp's
sentencepiece tokenizer does, restated in ``reference_encode`` — on every normal piece of the
vocabulary run together and on fixed text (spaces, newlines, digits, emoji). What cannot be
held so (another tokenizer model, a normaliser's character map, a special piece of the wrong
type, a place where the two part) is refused in one line saying what.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from workbench.errors import WorkbenchError

SPACE = "\u2581"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SAMPLES = ("Once upon a time, there was a little girl named Lily. She liked to play outside.\n"
           "\"Let's go!\" said Tom. They ran 123 steps, then 4567 more.",
           "  two  spaces, a tab\tand\nnewlines\n\n", "日本語 😀 café ñ — ▁ <s> </s>", " leading space", "x")


@dataclass
class Vocab:
    pieces: list[str]
    scores: list[float]
    types: list[int]
    unk: int
    bos: int
    eos: int
    pad: int
    add_space_prefix: bool
    remove_extra_whitespaces: bool

    def __post_init__(self):
        self.index = {}
        for i, p in enumerate(self.pieces):
            self.index.setdefault(p, i)


def vocab_from_fields(f: dict) -> Vocab:
    """The ``tokenizer.ggml.*`` values of a GGUF file (key -> value) as a ``Vocab``; what
    sentencepiece cannot hold is refused here, before any model is built."""
    def key(name):
        return f"tokenizer.ggml.{name}"

    model = f.get(key("model"))
    if model != "llama":
        raise WorkbenchError(f"its vocabulary is {key('model')} = {model!r}; only 'llama' (sentencepiece) can be "
                             "held by workbench's sentencepiece tokenizers")
    pieces, scores, types = f.get(key("tokens")), f.get(key("scores")), f.get(key("token_type"))
    if not pieces:
        raise WorkbenchError(f"it has no vocabulary ({key('tokens')})")
    for name, values in (("scores", scores), ("token_type", types)):
        if values is None or len(values) != len(pieces):
            raise WorkbenchError(f"its {key(name)} has {0 if values is None else len(values)} entries for "
                                 f"{len(pieces)} tokens")
    if f.get(key("precompiled_charsmap")):
        raise WorkbenchError(f"its vocabulary has a normaliser character map ({key('precompiled_charsmap')}), "
                             "which this import does not rebuild")
    types = [int(t) for t in types]
    bad = [i for i, t in enumerate(types) if t not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)]
    if bad:
        raise WorkbenchError(f"token {bad[0]} ({pieces[bad[0]]!r}) has type {types[bad[0]]}, which sentencepiece "
                             "has no type for")

    def special(name: str, want: tuple[int, ...], default: int) -> int:
        i = f.get(key(f"{name}_token_id"), default)
        if i is None or i < 0:
            return -1
        i = int(i)
        if i >= len(pieces) or types[i] not in want:
            raise WorkbenchError(f"its {key(name + '_token_id')} is {i}, which is not a "
                                 f"{'control' if CONTROL in want else 'unknown'} token of its vocabulary")
        return i

    v = Vocab(list(pieces), [float(s) for s in scores], types,
              unk=special("unknown", (UNKNOWN,), 0), bos=special("bos", (CONTROL,), -1),
              eos=special("eos", (CONTROL,), -1), pad=special("padding", (CONTROL,), -1),
              add_space_prefix=bool(f.get(key("add_space_prefix"), True)),
              remove_extra_whitespaces=bool(f.get(key("remove_extra_whitespaces"), False)))
    if v.unk < 0:
        raise WorkbenchError("its vocabulary has no unknown token, which a sentencepiece model needs")
    if v.bos < 0:
        raise WorkbenchError(f"its vocabulary names no BOS token ({key('bos_token_id')}), which generation starts from")
    if len(v.index) != len(pieces):
        dup = next(i for i, p in enumerate(pieces) if v.index[p] != i)
        raise WorkbenchError(f"token {dup} ({pieces[dup]!r}) repeats token {v.index[pieces[dup]]}; a sentencepiece "
                             "model holds each piece once")
    return v


def rebuild(v: Vocab) -> bytes:
    """The sentencepiece ModelProto (serialised) holding ``v``: a BPE model with v's pieces,
    scores, types, special pieces and normaliser switches, text otherwise left as it is."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    for piece, score, kind in zip(v.pieces, v.scores, v.types):
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, score, kind
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(v.pieces)
    t.byte_fallback = BYTE in v.types
    # merges never cross a word boundary in sentencepiece; llama.cpp's tokenizer has no words,
    # so runs of spaces stay together as it keeps them
    t.allow_whitespace_only_pieces = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = v.unk, v.bos, v.eos, v.pad
    t.unk_piece = v.pieces[v.unk]
    t.bos_piece = v.pieces[v.bos]
    if v.eos >= 0:
        t.eos_piece = v.pieces[v.eos]
    if v.pad >= 0:
        t.pad_piece = v.pieces[v.pad]
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = v.add_space_prefix
    n.remove_extra_whitespaces = v.remove_extra_whitespaces
    n.escape_whitespaces = True
    return m.SerializeToString()


def reference_encode(v: Vocab, text: str) -> list[int]:
    """``text`` tokenized as llama.cpp's sentencepiece tokenizer does from the vocabulary alone:
    characters, then repeatedly the adjacent pair whose joined piece scores highest (leftmost on
    a tie) merged, then any character without a piece as its UTF-8 byte pieces."""
    if not text:
        return []
    text = ((" " + text) if v.add_space_prefix else text).replace(" ", SPACE)
    syms = list(text)
    nxt = list(range(1, len(syms))) + [-1]
    prv = list(range(-1, len(syms) - 1))
    heap: list = []

    def pair(left: int) -> None:
        right = nxt[left] if left >= 0 else -1
        if left < 0 or right < 0:
            return
        joined = syms[left] + syms[right]
        i = v.index.get(joined)
        if i is not None:
            heapq.heappush(heap, (-v.scores[i], left, right, joined))

    for i in range(len(syms) - 1):
        pair(i)
    while heap:
        _, left, right, joined = heapq.heappop(heap)
        if nxt[left] != right or syms[left] + syms[right] != joined:
            continue  # one side has merged since
        syms[left], syms[right] = joined, ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
        pair(prv[left])
        pair(left)
    out: list[int] = []
    i = 0
    while i >= 0:
        piece = syms[i]
        if piece in v.index:
            out.append(v.index[piece])
        else:
            for b in piece.encode("utf-8"):
                out.append(v.index.get(f"<0x{b:02X}>", v.unk))
        i = nxt[i]
    return out


def reference_decode(v: Vocab, ids: list[int]) -> str:
    """What the vocabulary's pieces spell: spaces for ``▁``, byte pieces as their bytes,
    control pieces as nothing, the space prefix taken off again."""
    out = bytearray()
    for i in ids:
        kind, piece = v.types[i], v.pieces[i]
        if kind == BYTE:
            out.append(int(piece[3:5], 16))
        elif kind in (NORMAL, USER_DEFINED, UNUSED):
            out += piece.replace(SPACE, " ").encode("utf-8")
    text = out.decode("utf-8", errors="replace")
    return text[1:] if v.add_space_prefix and text.startswith(" ") else text


def samples(v: Vocab, chunk: int = 2000) -> list[str]:
    """Text to compare on: the fixed samples, then every normal piece of the vocabulary, run
    together in id order (so each merge meets its neighbours), in chunks."""
    run = "".join(p.replace(SPACE, " ") for p, t in zip(v.pieces, v.types) if t == NORMAL)
    return [*SAMPLES, *(run[i:i + chunk] for i in range(0, len(run), chunk))]


def check(v: Vocab, proto: bytes) -> None:
    """Refuse, in one line, a rebuilt model that encodes or decodes any sample otherwise than
    the vocabulary does."""
    from workbench.tokenizer.tokenizer import Tokenizer

    try:
        tok = Tokenizer(proto)
    except Exception as e:  # sentencepiece says why in its own exception types
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise WorkbenchError(f"its vocabulary cannot be held as a sentencepiece model ({first})") from None
    for text in samples(v):
        # sentencepiece itself: the Tokenizer's own care for a literal ▁ is not the vocabulary's
        want, have = reference_encode(v, text), tok.sp.encode(text)
        if want != have:
            at = next((k for k, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
            raise WorkbenchError(
                f"its vocabulary rebuilt as a sentencepiece model encodes {text[:40]!r}... otherwise than the file's "
                f"vocabulary does (token {at}: {_piece(v, want, at)} in the file, {_piece(v, have, at)} rebuilt)")
        if tok.decode(want) != reference_decode(v, want):
            raise WorkbenchError(f"its vocabulary rebuilt as a sentencepiece model decodes the tokens of {text[:40]!r} "
                                 f"as {tok.decode(want)[:40]!r}, the file's vocabulary as "
                                 f"{reference_decode(v, want)[:40]!r}")


def _piece(v: Vocab, ids: list[int], at: int) -> str:
    return repr(v.pieces[ids[at]]) if at < len(ids) else "nothing"
