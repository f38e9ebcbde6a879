"""Text generation: the decode loop, streaming, and loading a run's checkpoint to generate with.

Public API::

    model, tok, cfg, ckpt = load_for_generation(ws, "my-run", checkpoint=None, device="auto")
    params = SamplingParams(max_tokens=100, temperature=0.8, top_k=40, seed=1)
    result = generate(model, tok, "Once upon a time", params)      # -> Completion
    gen = Generation(model, tok, "Once upon a time", params, stop_event=ev)
    for delta in gen: print(delta, end="")                           # text deltas
    for step in gen.steps(): ...                                     # or TokenStep per token
    gen.result                                                       # -> Completion

    for tok_id, step in token_loop(model, prompt_ids, params): ...   # ids only, no tokenizer

Decoding runs in fp32, or in bf16 weights where that measured faster for this model's shape on
this CPU (``decode_precision``: only on CPUs whose bf16 matmuls are fast at all, measured once per
shape and cached; bf16 won from dim 288 up and lost below on the machine it was tried on). Greedy
text can differ between the two where two logits tie within bf16's error; ``precision="fp32"``
gives the exact one. ``Completion.precision`` says which ran.

The cached path (a pre-allocated ``KVCache``, one token per forward) is what runs; the plain
path (the whole window through the model each step, ``use_cache=False``) is the reference the
tests hold it to. Both follow one context rule: the model sees at most ``max_seq_len`` tokens.
A longer prompt keeps its most recent ``max_seq_len`` tokens (``Completion.prompt_dropped``
and ``notes`` say so); when the reply fills the context, the window restarts with the most
recent half (``context_shifts``), so generation never stops or crashes for lack of room.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

from workbench.errors import WorkbenchError
from workbench.generation.sampling import SamplingParams, choose
from workbench.generation.streaming import StopStrings, TextDeltas


@dataclass
class TokenStep:
    """One generated token. ``prob`` and ``top`` come from the model's own distribution
    (softmax of the raw logits, before temperature, penalty and filters) — the confidence
    the Chat pane colours by. ``text`` is the text this token made visible (may be ""). A
    final step with ``id == -1`` is not a token: it carries text released only at the end."""

    id: int
    prob: float
    top: list[tuple[int, float]]       # (id, prob), most likely first
    piece: str = ""                    # Tokenizer.surface(id), for display
    top_pieces: list[str] = field(default_factory=list)
    text: str = ""


@dataclass
class Completion:
    prompt: str
    text: str                          # decode(ids), cut before a stop string if one hit
    ids: list[int]                     # generated ids (no EOS)
    prompt_ids: list[int]              # the prompt ids the model saw (after any truncation)
    stop_reason: str                   # eos | stop | max_tokens | cancelled
    prompt_dropped: int = 0            # oldest prompt tokens dropped to fit the context
    context_shifts: int = 0
    notes: list[str] = field(default_factory=list)
    seed: int | None = None
    tokens: list[TokenStep] = field(default_factory=list)
    ttft_s: float | None = None        # call to first token (prefill included)
    decode_tok_s: float | None = None  # tokens after the first, per second
    precision: str = "fp32"            # the weights' number format while decoding

    def to_dict(self, tokens: bool = True) -> dict:
        d = asdict(self)
        if not tokens:
            d.pop("tokens")
        return d


class _Window:
    """Which tokens the model sees; shared by the cached and plain paths so they agree."""

    def __init__(self, prompt_ids: list[int], max_seq_len: int):
        self.L = max_seq_len
        self.seq = list(prompt_ids[-max_seq_len:])
        self.dropped = len(prompt_ids) - len(self.seq)
        self.start = 0
        self.shifts = 0

    def fit(self) -> bool:
        """Make room for the next forward; True when the window moved."""
        if len(self.seq) - self.start <= self.L:
            return False
        self.start = len(self.seq) - max(1, self.L // 2)
        self.shifts += 1
        return True


class _Loop:
    """The decode loop over ids. Iterate ``run()``; afterwards read the window and stop reason."""

    def __init__(self, model, prompt_ids, params: SamplingParams, eos_id: int | None = None,
                 generator=None, stop_event: threading.Event | None = None, use_cache: bool = True):
        if not prompt_ids:
            raise WorkbenchError("the prompt is empty: give at least one token (e.g. BOS)")
        self.model, self.params, self.eos_id = model, params.validate(), eos_id
        self.stop_event, self.use_cache = stop_event, use_cache
        self.cfg = model.config
        bad = [i for i in prompt_ids if not 0 <= int(i) < self.cfg.vocab_size]
        if bad:
            raise WorkbenchError(f"prompt token id {int(bad[0])} is out of range: the model's "
                                 f"vocab_size is {self.cfg.vocab_size} (ids 0 to {self.cfg.vocab_size - 1})")
        self.window = _Window([int(i) for i in prompt_ids], self.cfg.max_seq_len)
        self.seed = params.seed
        if generator is None:
            import torch

            if self.seed is None:  # a fresh seed, reported so the text can be reproduced
                self.seed = int.from_bytes(os.urandom(8), "little") >> 1
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.generator = generator
        self.vocab_limit = self.cfg.vocab_size
        self.stop_reason = "max_tokens"
        self.halt = False  # set by a consumer (e.g. a stop string) to end after this token

    def run(self) -> Iterator[TokenStep]:
        import torch

        p, w, model = self.params, self.window, self.model
        device = next(model.parameters()).device
        with torch.inference_mode():
            seen = None
            if p.repetition_penalty != 1.0:
                seen = torch.zeros(self.cfg.vocab_size, dtype=torch.bool)
                seen[torch.tensor(w.seq)] = True
            cache = None
            if self.use_cache:
                from workbench.model import KVCache

                # the window never outgrows prompt + max_tokens, so the cache need not either
                S = min(w.L, len(w.seq) + max(1, p.max_tokens))
                cache = KVCache.for_model(model, 1, max_seq_len=S)
        n = 0
        while n < p.max_tokens:
            if self.stop_event is not None and self.stop_event.is_set():
                self.stop_reason = "cancelled"
                return
            with torch.inference_mode():
                moved = w.fit()
                if cache is None:
                    x = w.seq[w.start:]
                else:
                    if moved:
                        cache.reset()
                    x = w.seq[w.start + cache.pos:]  # only what the cache has not seen
                logits = model(torch.tensor([x], device=device), kv_cache=cache, logits_to_keep=1)[0, -1]
                # ids past the tokenizer's vocab (a padded model vocab) cannot be decoded
                logits = logits[:self.vocab_limit].float().cpu()
                tok = choose(logits, p, self.generator, seen)
                step = self._step(logits, tok)
                if seen is not None:  # inference tensors are only written in inference mode
                    seen[tok] = True
            if tok == self.eos_id and p.stop_at_eos:
                self.stop_reason = "eos"
                return
            w.seq.append(tok)
            n += 1
            yield step
            if self.halt:
                return

    def _step(self, logits, tok: int) -> TokenStep:
        import torch

        probs = torch.softmax(logits, dim=-1)
        top = []
        if self.params.alternatives:
            v, i = torch.topk(probs, min(self.params.alternatives, probs.shape[-1]))
            top = list(zip(i.tolist(), v.tolist()))
        return TokenStep(tok, float(probs[tok]), top)


def token_loop(model, prompt_ids, params: SamplingParams, eos_id: int | None = None, generator=None,
               stop_event=None, use_cache: bool = True) -> Iterator[TokenStep]:
    """Generated tokens as ``TokenStep``s (ids and probabilities, no text)."""
    return _Loop(model, prompt_ids, params, eos_id, generator, stop_event, use_cache).run()


class Generation:
    """One generation with text: iterate for deltas, or ``steps()`` for per-token detail.

    The concatenated deltas equal ``result.text``: ``decode(result.ids)``, cut before the first
    stop string when one appears. ``stop_event`` ends it between tokens.
    """

    def __init__(self, model, tok, prompt: str, params: SamplingParams | None = None, *,
                 stop_event: threading.Event | None = None, use_cache: bool = True,
                 generator=None, bos: bool = True, prompt_ids: list[int] | None = None):
        self.tok, self.prompt = tok, prompt
        self.params = (params or SamplingParams()).validate()
        ids = prompt_ids if prompt_ids is not None else tok.encode(prompt, bos=bos)
        self._t0 = time.perf_counter()
        self.loop = _Loop(model, ids or [tok.bos_id], self.params, tok.eos_id, generator,
                          stop_event, use_cache)
        self.loop.vocab_limit = min(self.loop.vocab_limit, tok.vocab_size)
        self._prompt_len = len(ids or [tok.bos_id])
        self.result: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        for step in self.steps():
            if step.text:
                yield step.text

    def steps(self) -> Iterator[TokenStep]:
        if self.result is not None:
            raise WorkbenchError("this generation has already run; start a new one")
        tok, loop = self.tok, self.loop
        deltas, stops = TextDeltas(tok.decode, tok.decode_after), StopStrings(self.params.stop)
        w = loop.window
        prompt_seen = list(w.seq)
        steps: list[TokenStep] = []
        t_first = t_last = None
        for step in loop.run():
            t_last = time.perf_counter()
            t_first = t_first or t_last
            step.piece = tok.surface(step.id)
            step.top_pieces = [tok.surface(i) for i, _ in step.top]
            step.text = stops.push(deltas.push(step.id))
            if stops.hit:
                loop.halt = True
            steps.append(step)
            yield step
        tail = stops.push(deltas.flush()) + stops.flush()
        if tail:
            # text released only at the end (a character whose bytes never completed, or a
            # held-back stop-string prefix): a last step that is not a token, so that the
            # concatenated step texts are still the whole text
            yield TokenStep(-1, 0.0, [], text=tail)
        n = len(steps)
        ids = [s.id for s in steps]
        reason = "stop" if stops.hit else loop.stop_reason
        notes = []
        if w.dropped:
            notes.append(f"the prompt ({self._prompt_len} tokens) is longer than the context "
                         f"(max_seq_len {w.L}): kept its most recent {w.L} tokens, dropped "
                         f"the first {w.dropped}")
        if w.shifts:
            notes.append(f"the context filled up {w.shifts} time(s): each time the model "
                         f"continued from the most recent {max(1, w.L // 2)} tokens")
        self.result = Completion(
            prompt=self.prompt, text=stops.text, ids=ids, prompt_ids=prompt_seen,
            stop_reason=reason, prompt_dropped=w.dropped, context_shifts=w.shifts, notes=notes,
            seed=loop.seed, tokens=steps,
            ttft_s=(t_first - self._t0) if t_first else None,
            decode_tok_s=(n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else None,
            precision=weights_precision(loop.model))


def generate(model, tok, prompt: str, params: SamplingParams | None = None, **kw) -> Completion:
    """Run a generation to the end and return its ``Completion``."""
    g = Generation(model, tok, prompt, params, **kw)
    for _ in g.steps():
        pass
    return g.result


def weights_precision(model) -> str:
    """fp32, bf16 or fp16: the number format of a model's weights."""
    import torch

    dtype = next(model.parameters()).dtype
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


DECODE_PRECISIONS = ("auto", "fp32", "bf16")
DECODE_MIN_GAIN = 1.05  # bf16 decoding must beat fp32 by this much to be picked


def measure_decode(cfg, n_tokens: int = 24, rounds: int = 2) -> dict:
    """Greedy decode tokens/s of a freshly initialised model of ``cfg`` in fp32 and in bf16
    (alternating rounds, the best of each): the speed depends on the shape, not the weights."""
    import torch

    from workbench.model import build_model
    from workbench.generation.sampling import SamplingParams

    models = {"fp32": build_model(cfg, seed=0).eval()}
    models["bf16"] = build_model(cfg, seed=0).eval().to(torch.bfloat16)
    prompt = list(range(min(16, cfg.max_seq_len // 2) or 1))
    n = max(2, min(n_tokens, cfg.max_seq_len - len(prompt)))
    params = SamplingParams(max_tokens=n, temperature=0.0, stop_at_eos=False, alternatives=0)
    best = {k: 0.0 for k in models}
    for r in range(rounds + 1):
        for k, m in models.items():
            t = 0.0
            for i, _step in enumerate(token_loop(m, prompt, params)):
                if i == 0:
                    t = time.perf_counter()  # from the first token: the prefill is not decoding
            if r:  # the first round warms up
                best[k] = max(best[k], (n - 1) / max(time.perf_counter() - t, 1e-9))
    return {k: round(v, 1) for k, v in best.items()} | {"tokens": n}


def decode_precision(cfg, requested: str = "auto", device=None, measure: bool = True) -> tuple[str, str]:
    """(precision, reason) for decoding a model of ``cfg``: fp32 or bf16 weights."""
    if requested not in DECODE_PRECISIONS:
        raise WorkbenchError(f"precision {requested!r} is not allowed for generation: expected one of "
                             f"{', '.join(DECODE_PRECISIONS)}")
    if requested != "auto":
        return requested, "asked for"
    if device is not None and getattr(device, "type", str(device)) != "cpu":
        return "fp32", "auto; decoding off the CPU is not measured here"
    from workbench.machine.probe import BF16_MIN_SPEEDUP, cached_measurement, matmul_probe

    mm = matmul_probe(measure=measure)
    if not mm or mm["bf16_speedup"] < BF16_MIN_SPEEDUP:
        return "fp32", "auto; bf16 is not faster on this CPU"
    key = (f"decode d{cfg.dim} L{cfg.n_layers} H{cfg.n_heads}/{cfg.kv_heads} F{cfg.ffn_dim} V{cfg.vocab_size} "
           f"T{cfg.max_seq_len}")
    d = cached_measurement(key, lambda: measure_decode(cfg), measure)
    if not d:
        return "fp32", "auto; decoding speed not measured for this shape yet"
    facts = f"measured decode bf16 {d['bf16']:,.0f} vs fp32 {d['fp32']:,.0f} tok/s"
    if d["bf16"] >= d["fp32"] * DECODE_MIN_GAIN:
        return "bf16", f"auto; {facts}"
    return "fp32", f"auto; {facts}"


class LoadedModels:
    """Runs' models loaded for generation by (run, checkpoint), for a client that switches
    between them (the Chat pane, two side by side): each loaded once, only one run's kept (so
    memory stays bounded), safe to call from several threads."""

    def __init__(self, ws):
        self.ws = ws
        self._models: dict = {}
        self._lock = threading.Lock()

    def get(self, run: str, checkpoint: str, device: str):
        """(model, tok) of ``run`` at ``checkpoint``, loaded on ``device`` the first time."""
        key = (run, checkpoint)
        with self._lock:
            if key not in self._models:
                model, tok, _, _ = load_for_generation(self.ws, run, checkpoint, device=device)
                self._models = {k: v for k, v in self._models.items() if k[0] == run}
                self._models[key] = (model, tok)
            return self._models[key]


def load_for_generation(ws, run_name: str, checkpoint: str | None = None, device: str = "auto",
                        precision: str = "auto", say=None):
    """A run's model (eval mode) with a checkpoint's weights, on ``device``, in the decoding
    precision (``decode_precision``): (model, tok, cfg, ckpt). ``model.precision_reason`` says why.

    Loading is strict; a corrupt, truncated, non-finite or mismatched checkpoint raises a
    ``WorkbenchError`` naming the file (with no ``checkpoint`` named, an older one that loads is
    used instead and ``say`` hears so).
    """
    from workbench.machine.device import resolve_device
    from workbench.runs.folder import get_run
    from workbench.runs.load import load_run_model

    dev = resolve_device(device)
    name, why = decode_precision(get_run(ws, run_name).config().model, precision, dev)
    model, tok, cfg, ckpt = load_run_model(get_run(ws, run_name), checkpoint, device=str(dev), say=say)
    if name == "bf16":
        import torch

        model.to(torch.bfloat16)
    model.precision_reason = why
    return model, tok, cfg, ckpt


@dataclass
class BeamResult:
    """``beam_generation``'s answer: the beams best first (``Beam.text`` filled in), the best
    one's tokens as ``TokenStep``s (its probabilities under the model, for colouring and top-5),
    and the notes and number format of the search."""

    beams: list
    steps: list
    notes: list
    precision: str
    seconds: float


def beam_generation(model, tok, prompt: str, search, stop_event: threading.Event | None = None,
                    alternatives: int = 5, score: bool = True) -> BeamResult:
    """Beam search from ``prompt`` (``generation.beam``) with text: the verb ``generate --beams``
    and the Chat pane's beam decoding share. The best beam's tokens are scored again in one
    forward over prompt + beam, so each step carries its probability and the top alternatives
    under the model's own distribution, as a sampled reply's steps do (``score=False``: no steps,
    no extra forward — the CLI prints texts and log-probabilities only)."""
    import torch

    from workbench.generation.beam import beam_search

    ids = tok.encode(prompt, bos=True) or [tok.bos_id]
    t0 = time.perf_counter()
    found = beam_search(model, ids, search, eos_id=tok.eos_id, vocab_limit=tok.vocab_size, stop_event=stop_event)
    seconds = time.perf_counter() - t0
    for b in found:
        b.text = tok.decode(b.ids)
    steps: list[TokenStep] = []
    if score and found and found[0].ids:
        best = found[0].ids
        seq = (ids + best)[-model.config.max_seq_len:]
        device = next(model.parameters()).device
        with torch.inference_mode():
            logits = model(torch.tensor([seq], device=device))[0, -len(best) - 1:-1]
        probs = torch.softmax(logits[:, :tok.vocab_size].float().cpu(), dim=-1)
        deltas = TextDeltas(tok.decode, tok.decode_after)
        for row, i in zip(probs, best):
            v, top = torch.topk(row, min(alternatives, row.shape[-1])) if alternatives else (None, None)
            pairs = list(zip(top.tolist(), v.tolist())) if alternatives else []
            steps.append(TokenStep(i, float(row[i]), pairs, piece=tok.surface(i),
                                   top_pieces=[tok.surface(j) for j, _ in pairs], text=deltas.push(i)))
        tail = deltas.flush()
        if tail:
            steps.append(TokenStep(-1, 0.0, [], text=tail))
    return BeamResult(found, steps, list(search.notes), weights_precision(model), seconds)
