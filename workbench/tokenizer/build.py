"""Building a tokenizer in a child process, with progress and cancel.

``build_request`` turns what ``workbench tokenizer build`` or the Tokenizer pane's form asks for
into a folder name and checked ``TokenizerSettings``.
``BuildJob`` checks the request up front (name, settings, data source), then starts a child
process that reads a capped sample of the training documents, trains sentencepiece BPE,
measures bytes/chars per token on held-out text and writes the folder under a temporary name.
The parent renames it into place only when everything succeeded, so a cancelled or failed build
leaves nothing behind. sentencepiece logs to fd 2 in the child, where they are parsed for merge
progress instead of reaching the user's terminal.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from workbench import fileio
from workbench.data.sources import DEFAULT_HUB_ID, resolve_source
from workbench.errors import Cancelled, WorkbenchError
from workbench.procs import ensure_resource_tracker
from workbench.tokenizer.tokenizer import (BOS_ID, EOS_ID, MODEL_FILE, PAD_ID, SETTINGS_FILE, SPACE_MARK, STATS_FILE, UNK_ID, Tokenizer, TokenizerInfo, TokenizerSettings, LIMITS, min_vocab_size, read_info, within_limits)
from workbench.workspace import Workspace, check_name

# sentencepiece skips sentences longer than max_sentence_length; long documents are cut into
# pieces below that, at line breaks where possible.
CHUNK_CHARS = 16_000
MAX_SENTENCE_BYTES = 1 << 16
HELDOUT_BYTES = 1 << 20
_MERGE_RE = re.compile(rb"merges=(\d+)")
_TOO_HIGH_RE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW_RE = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")


def default_name(data: str, vocab: int) -> str:
    """A folder name from the source and the vocab size, e.g. ``tinystories-512``."""
    stem = "tinystories" if data in ("", DEFAULT_HUB_ID) else Path(data.rstrip("/")).stem or "data"
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem.lower()).strip("-.") or "data"
    return f"{stem[:50]}-{vocab}"


def build_request(data: str, vocab_size: int | str, sample_mb: float | str, byte_fallback: bool,
                  name: str | None = None, text_column: str = "text") -> tuple[str, TokenizerSettings]:
    """The folder name (``default_name`` where none is given) and checked settings of a build,
    from ``workbench tokenizer build``'s options or the Tokenizer pane's form. Numbers typed into
    the form come as text: one that does not parse or is out of range is refused in the form's
    words, naming its field."""
    data = data.strip() or DEFAULT_HUB_ID
    if isinstance(vocab_size, str):
        vocab_size = parse_setting("vocab_size", vocab_size)
    if isinstance(sample_mb, str):
        sample_mb = parse_setting("sample_mb", sample_mb)
    settings = TokenizerSettings(vocab_size=vocab_size, byte_fallback=byte_fallback, sample_mb=sample_mb,
                                 data=data, text_column=text_column)
    return (name or "").strip() or default_name(data, vocab_size), settings.validate()


# What the user calls each number (the CLI's options, the Tokenizer pane's labels), by setting.
SETTING_WORDS = {"vocab_size": "vocab size", "sample_mb": "sample MB"}


def parse_setting(name: str, text: str) -> int | float:
    """A build setting's number from its text (the CLI's options and the Tokenizer pane's boxes,
    which mark a value red with this message), checked against ``tokenizer.LIMITS``; refused
    naming the setting, the value and what is allowed."""
    kind = LIMITS[name][0]
    try:
        value = kind(text.strip())
    except ValueError:
        value = None
    if value is None or not within_limits(name, value):
        raise WorkbenchError(f"{SETTING_WORDS[name]} {text.strip()!r} is not allowed: expected {LIMITS[name][4]}")
    return value


@dataclass
class BuildEvent:
    kind: str  # progress | done | error
    phase: str = ""
    done: float = 0.0
    total: float | None = None
    message: str = ""
    info: TokenizerInfo | None = None


class BuildJob:
    """One tokenizer build. ``start()`` then ``poll()`` (non-blocking) or ``wait()``."""

    def __init__(self, ws: Workspace, name: str, settings: TokenizerSettings, overwrite: bool = False):
        check_name("tokenizer", name)
        self.ws, self.name, self.settings, self.overwrite = ws, name, settings.validate(), overwrite
        self.source = resolve_source(settings.data, settings.text_column)
        self.final = ws.tokenizer_path(name)
        if self.final.exists() and not overwrite:
            raise WorkbenchError(
                f"tokenizer {name!r} already exists at {str(self.final)!r}; choose another --name or pass --overwrite"
            )
        self.proc: mp.Process | None = None
        self.tmp: Path | None = None
        self.result: TokenizerInfo | None = None
        self.error: str | None = None
        self.cancelled = False
        self.last: BuildEvent | None = None
        self._q = None
        self._lock = None

    def start(self) -> "BuildJob":
        from workbench.locks import acquire, remove_stale

        root = self.ws.tokenizers_dir(create=True)
        remove_stale(root)  # a killed build's
        # one build of a name at a time, in any process: the second is refused naming the first
        self._lock = acquire(root / f".{self.name}.lock", "building", f"tokenizer {self.name!r}")
        if self.final.exists() and not self.overwrite:  # built by another process since __init__
            self._release()
            raise WorkbenchError(f"tokenizer {self.name!r} already exists at {str(self.final)!r}; choose another "
                                 "--name or pass --overwrite")
        for p in root.iterdir():  # what killed builds left behind (never a live build's)
            if p.is_dir() and fileio.is_stale_temp(p):
                shutil.rmtree(p, ignore_errors=True)
        self.tmp = root / f".{self.name}{fileio.TMP_MARK}{os.getpid()}-{int(time.time() * 1000)}"
        try:
            ensure_resource_tracker()
            ctx = mp.get_context("spawn")
            self._q = ctx.Queue()
            self.proc = ctx.Process(
                target=_child_main, args=(self._q, asdict(self.settings), str(self.tmp), os.getpid()), daemon=True
            )
            self.proc.start()
        except BaseException:
            self._release()
            raise
        return self

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None or self.cancelled

    def poll(self, timeout: float = 0.0) -> list[BuildEvent]:
        """Events since the last poll (waiting up to ``timeout`` for the first); the final
        event has kind done or error."""
        events: list[BuildEvent] = []
        if self.proc is None:
            return events
        deadline = time.monotonic() + timeout
        while not self.finished:
            alive = self.proc.is_alive()
            wait = 0.0 if events else max(0.0, deadline - time.monotonic())
            if not alive:
                wait = max(wait, 0.5)  # what the child sent just before exiting may still be in the pipe
            try:
                kind, payload = self._q.get(timeout=wait) if wait else self._q.get_nowait()
            except queue.Empty:
                if not alive:
                    self.error = f"the tokenizer build process died (exit code {self.proc.exitcode})"
                    self._cleanup()
                    events.append(BuildEvent("error", message=self.error))
                break
            if kind == "progress":
                ev = BuildEvent("progress", **payload)
            elif kind == "done":
                ev = self._finish()
            else:
                self.error = payload
                self._cleanup()
                ev = BuildEvent("error", message=payload)
            events.append(ev)
            self.last = ev
        return events

    def _finish(self) -> BuildEvent:
        self.proc.join(timeout=5)
        old = None
        try:
            if self.final.exists():
                old = self.final.with_name(f".{self.name}{fileio.TMP_MARK}old-{os.getpid()}-{int(time.time() * 1000)}")
                os.replace(self.final, old)
            os.replace(self.tmp, self.final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            self._release()
        self.result = read_info(self.final)
        return BuildEvent("done", phase="done", done=1, total=1, message="built", info=self.result)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def cancel(self) -> None:
        if self.finished:
            return
        self.cancelled = True
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()

    def wait(
        self,
        on_event: Callable[[BuildEvent], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> TokenizerInfo:
        """Block until the build ends; ``on_event`` hears each poll's newest progress and the
        final event; ``cancel_event`` stops it from another thread."""
        if self.proc is None:
            self.start()
        try:
            while not self.finished:
                if cancel_event is not None and cancel_event.is_set():
                    self.cancel()
                    break
                events = self.poll(timeout=0.1)
                progress = [e for e in events if e.kind == "progress"]
                for ev in events:
                    # a poll's newest progress says it all (a UI redraws a few times a second)
                    if on_event and (ev.kind != "progress" or ev is progress[-1]):
                        on_event(ev)
        except BaseException:
            self.cancel()
            raise
        if self.cancelled:
            raise Cancelled(f"tokenizer build {self.name!r} was cancelled; nothing was written")
        if self.error:
            raise WorkbenchError(self.error)
        return self.result


def build_tokenizer(
    ws: Workspace,
    name: str,
    settings: TokenizerSettings,
    overwrite: bool = False,
    on_event: Callable[[BuildEvent], None] | None = None,
    cancel_event: threading.Event | None = None,
) -> TokenizerInfo:
    return BuildJob(ws, name, settings, overwrite).wait(on_event, cancel_event)


# --- the child process -----------------------------------------------------------------------


def _chunks(doc: str):
    """Cut a long document into sentence-sized pieces, at line breaks where possible."""
    while len(doc) > CHUNK_CHARS:
        cut = doc.rfind("\n", 0, CHUNK_CHARS)
        cut = cut + 1 if cut > 0 else CHUNK_CHARS
        yield doc[:cut]
        doc = doc[cut:]
    if doc:
        yield doc


def _capture_fd2(on_merge: Callable[[int], None]) -> None:
    """Send this process's fd 2 (where sentencepiece logs) into a pipe we parse for progress."""
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)

    def reader():
        with os.fdopen(r, "rb") as f:
            for line in f:
                m = _MERGE_RE.search(line)
                if m:
                    on_merge(int(m.group(1)))

    threading.Thread(target=reader, daemon=True).start()


def _die_with_parent(parent: int) -> None:
    """End this child when the process that started it is gone (killed, even with SIGKILL), so
    a killed `tokenizer build` never leaves a trainer running on its own."""
    import signal

    from workbench.procs import set_parent_death_signal

    set_parent_death_signal(signal.SIGKILL)  # Linux: the kernel ends it when the parent dies

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # died before the watch began
        os._exit(1)


def _child_main(q, settings_dict: dict, tmp_dir: str, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    try:
        stats = _build(q, TokenizerSettings(**settings_dict), Path(tmp_dir))
        q.put(("done", stats))
    except WorkbenchError as e:
        q.put(("error", str(e)))
    except Exception as e:  # report anything else as one line; the parent shows it
        q.put(("error", f"tokenizer build failed: {type(e).__name__}: {e}"))


def _build(q, s: TokenizerSettings, tmp: Path) -> dict:
    import sentencepiece as spm

    t0 = time.monotonic()

    def progress(phase, done, total=None, message=""):
        q.put(("progress", {"phase": phase, "done": done, "total": total, "message": message}))

    source = resolve_source(s.data, s.text_column)
    cap = int(s.sample_mb * 1e6)
    avail = source.total_bytes("train")
    target = min(cap, avail) if avail else cap
    sample: list[str] = []
    alphabet: set[str] = set()
    nbytes = ndocs = 0
    last = 0.0
    for doc in source.documents("train"):
        # A literal "▁" would be read as a space; it is encoded through byte pieces instead.
        doc = doc.replace(SPACE_MARK, "")
        alphabet.update(doc)
        sample.extend(_chunks(doc))
        nbytes += len(doc.encode("utf-8"))
        ndocs += 1
        if time.monotonic() - last > 0.2:
            last = time.monotonic()
            progress("reading sample", nbytes, target, f"{nbytes / 1e6:.1f} MB, {ndocs} documents")
        if nbytes >= cap:
            break
    if not sample:
        raise WorkbenchError(f"the data source {s.data!r} has no training text")
    alphabet.discard("\x00")
    needed = min_vocab_size(len(alphabet), s.byte_fallback)
    if s.vocab_size < needed and s.character_coverage >= 1.0:
        raise WorkbenchError(_too_small(s, needed, len(alphabet)))
    progress("merging", 0, max(1, s.vocab_size - needed), f"alphabet {len(alphabet)} characters")

    n_merges = max(1, s.vocab_size - needed)
    _capture_fd2(lambda m: progress("merging", m, n_merges, f"{m} merges"))
    model = io.BytesIO()
    t_train = time.monotonic()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=model,
            model_type="bpe",
            vocab_size=s.vocab_size,
            character_coverage=s.character_coverage,
            byte_fallback=s.byte_fallback,
            split_digits=s.split_digits,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_by_whitespace=True,
            max_sentence_length=MAX_SENTENCE_BYTES,
            input_sentence_size=0,
            unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
            num_threads=os.cpu_count() or 1,
            minloglevel=0,  # INFO lines carry merge progress; fd 2 is captured above
        )
    except RuntimeError as e:
        raise WorkbenchError(_explain_trainer_error(str(e), s, len(alphabet))) from None
    train_seconds = time.monotonic() - t_train
    del sample

    tok = Tokenizer(model.getvalue())
    progress("measuring", 0, HELDOUT_BYTES, "bytes per token on held-out text")
    held = _held_out_stats(source, tok)
    tmp.mkdir(parents=True, exist_ok=False)
    fileio.write_bytes(tmp / MODEL_FILE, model.getvalue())
    settings = asdict(s)
    settings.update(model_type="bpe", normalization="identity", add_dummy_prefix=False,
                    specials={"unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID, "pad": PAD_ID})
    fileio.write_yaml(tmp / SETTINGS_FILE, settings)
    stats = {
        "vocab_size": tok.vocab_size,
        "alphabet_size": len(alphabet),
        "min_vocab_size": needed,
        "sample_bytes": nbytes,
        "sample_documents": ndocs,
        "split_documents": source.split_documents,  # cut into pieces to keep memory bounded
        **held,
        "train_seconds": round(train_seconds, 3),
        "build_seconds": round(time.monotonic() - t0, 3),
        "sha256": tok.sha256,
        "sentencepiece_version": spm.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    fileio.write_json(tmp / STATS_FILE, stats)
    return stats


def _held_out_stats(source, tok: Tokenizer) -> dict:
    """Bytes and characters per token on up to 1 MB of validation text (not seen in training
    when the source has a validation split or a held-out fraction)."""
    for split in ("validation", "train"):  # train only when there is no held-out text at all
        nbytes = nchars = ntok = ndocs = 0
        for doc in source.documents(split):
            nbytes += len(doc.encode("utf-8"))
            nchars += len(doc)
            ntok += len(tok.encode(doc))
            ndocs += 1
            if nbytes >= HELDOUT_BYTES:
                break
        if ntok:
            break
    return {
        "heldout_split": split,
        "heldout_documents": ndocs,
        "heldout_bytes": nbytes,
        "heldout_tokens": ntok,
        "bytes_per_token": round(nbytes / ntok, 4),
        "chars_per_token": round(nchars / ntok, 4),
    }


def _too_small(s: TokenizerSettings, needed: int, alphabet: int) -> str:
    parts = f"{alphabet} characters + 4 specials" + (" + 256 byte pieces" if s.byte_fallback else "")
    hint = " (or --no-byte-fallback for a character-level vocab)" if s.byte_fallback else ""
    return (
        f"vocab_size {s.vocab_size} is too small for this data: the minimum is {needed} "
        f"({parts}); ask for at least {needed}{hint}"
    )


def _explain_trainer_error(msg: str, s: TokenizerSettings, alphabet: int) -> str:
    m = _TOO_HIGH_RE.search(msg)
    if m:
        return (
            f"vocab_size {s.vocab_size} is too large for this sample: at most {m.group(2)} pieces can be "
            "learned from it; ask for fewer or use more text (--sample-mb)"
        )
    m = _TOO_LOW_RE.search(msg)
    if m:
        return _too_small(s, int(m.group(2)), alphabet)
    return f"sentencepiece failed: {msg.splitlines()[0] if msg else 'unknown error'}"
