"""The planner: the recipe a time budget buys on this machine.

``plan(ws, PlanRequest(tokenizer, minutes))`` picks a model shape and a training recipe for the
budget, from two kinds of measurement:

* **this machine's speed** for each candidate shape (``measure_throughput``: a few real training
  steps — the fused loss, the precision and attention kernel training would use — at the
  thread count training will have; cached per machine, so seconds the first time only);
* **a rule fitted to runs we measured** (``LAW``, fitted by ``benchmarks/fit_planner.py`` to the
  sweeps in ``benchmarks/PLANNER.md``): validation bits per byte as
  ``E + A / N^alpha + B / D^beta`` for N non-embedding parameters trained on D tokens, which says
  how to split a token budget between parameters and data at this scale.

Every candidate's tokens are its measured tokens/s times the budget; the plan is the candidate
with the lowest predicted bits per byte, trained with the recipe the sweeps found best (learning
rate, schedule, optimizer). The plan says what it picked and why, and is recorded in the run.
The CLI (``workbench plan``, ``workbench train --minutes``) and the Config pane call ``plan``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.config.schema import Config, ModelConfig, TrainConfig
from workbench.config.overrides import check_minutes
from workbench.errors import WorkbenchError

LAW_FILE = Path(__file__).with_name("planner_law.json")
HEAD_DIM = 32
SEQ_LEN = 256
BATCH = 16
# candidate shapes (dim, n_layers): wider and deeper together, as the sweeps found best
SHAPES = ((64, 2), (96, 3), (128, 4), (160, 4), (192, 5), (224, 6), (256, 6), (320, 6), (384, 8))
# the share of a time budget that goes to steps (evaluations, checkpoints, samples take the rest)
STEP_SHARE = 0.95


def load_law() -> dict:
    try:
        d = json.loads(LAW_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"the planner's fitted rule {LAW_FILE} cannot be read ({e})") from None
    for k in ("E", "A", "alpha", "B", "beta", "recipe"):
        if k not in d:
            raise WorkbenchError(f"the planner's fitted rule {LAW_FILE} has no {k!r}")
    return d


def predicted_bpb(law: dict, n_params: float, tokens: float) -> float:
    """The fitted rule (AdamW, cosine runs) times the recipe's measured gain over those runs
    (``recipe_factor``: its bits per byte / the rule's at the shape and tokens it was measured)."""
    fit = law["E"] + law["A"] / max(n_params, 1.0) ** law["alpha"] + law["B"] / max(tokens, 1.0) ** law["beta"]
    return law.get("recipe_factor", 1.0) * fit


def shape_config(dim: int, n_layers: int, vocab: int, recipe: dict) -> ModelConfig:
    kw = {k: v for k, v in recipe.get("model", {}).items()}
    return ModelConfig(vocab_size=vocab, dim=dim, n_layers=n_layers, n_heads=max(1, dim // HEAD_DIM),
                       max_seq_len=SEQ_LEN, **kw)


def body_params(cfg: ModelConfig) -> int:
    """Non-embedding parameters: what the fitted rule's N counts."""
    from workbench.config.sizes import param_breakdown

    b = param_breakdown(cfg)
    return b["attention"] + b["mlp"] + b["norms"]


# ---------------------------------------------------------------- this machine's speed

def throughput_key(cfg: ModelConfig, batch: int, precision: str, threads: int, optimizer: str) -> str:
    return (f"throughput d{cfg.dim} L{cfg.n_layers} H{cfg.n_heads}/{cfg.kv_heads} F{cfg.ffn_dim} V{cfg.vocab_size} "
            f"T{cfg.max_seq_len} B{batch} {cfg.mlp}{' qk' if cfg.qk_norm else ''}"
            f"{' cap' if cfg.logit_softcap else ''} {precision} {optimizer} t{threads}")


def measure_throughput(cfg: ModelConfig, batch: int, precision_name: str, optimizer: str = "adamw",
                       steps: int = 3) -> dict:
    """Tokens/s of training steps at this shape: forward with the fused loss, backward, clipping
    and the optimizer, in the precision and attention kernel training would pick."""
    import statistics

    import torch

    from workbench.machine.choices import attention_for, precision_for
    from workbench.machine.device import resolve_precision
    from workbench.model import build_model
    from workbench.training.optim import make_optimizer

    cpu = torch.device("cpu")
    prec = resolve_precision(precision_for(precision_name, cpu, measure=True)[0], cpu)
    kernel, _ = attention_for(cfg, batch, prec.name, "cpu", measure=True)
    with torch.random.fork_rng():
        model = build_model(cfg, seed=0).train()
        model.set_attention_kernel(kernel)
        opt = make_optimizer(model, TrainConfig(optimizer=optimizer), cpu)
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.max_seq_len + 1))
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            with prec.autocast(cpu):
                loss = model(x[:, :-1], targets=x[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:  # the first step warms the kernels up
                times.append(time.perf_counter() - t)
    return {"tok_s": round(batch * cfg.max_seq_len / statistics.median(times), 1), "precision": prec.name,
            "attention": kernel, "threads": torch.get_num_threads(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def throughput(cfg: ModelConfig, batch: int, precision_name: str, optimizer: str, measure: bool = True) -> dict | None:
    import torch

    from workbench.machine.probe import cached_measurement

    key = throughput_key(cfg, batch, precision_name, torch.get_num_threads(), optimizer)
    return cached_measurement(key, lambda: measure_throughput(cfg, batch, precision_name, optimizer), measure)


# ---------------------------------------------------------------- the plan

@dataclass
class PlanRequest:
    tokenizer: str | None       # the vocab comes from this tokenizer ...
    minutes: float
    threads: int | None = None  # torch threads training will use (default: torch's own)
    precision: str = "auto"
    vocab: int | None = None    # ... or is given (the Config pane's form)

    def validate(self) -> "PlanRequest":
        check_minutes(self.minutes)
        if self.tokenizer is None and not (isinstance(self.vocab, int) and 2 <= self.vocab <= 2**20):
            raise WorkbenchError(f"vocab_size = {self.vocab!r} is not allowed: give a tokenizer or a vocab of 2 to 2**20")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise WorkbenchError(f"threads = {self.threads!r} is not allowed: 1 to 1024")
        return self


@dataclass
class Plan:
    config: Config
    minutes: float
    tokens: int                 # what the budget should buy at the measured speed
    tok_s: float
    predicted_bpb: float
    reasons: list[str] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    vocab_advice: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d

    def record(self) -> dict:
        """What a run keeps of its plan (config.yaml's ``plan``)."""
        return {"minutes": self.minutes, "tokens": self.tokens, "tok_s": self.tok_s,
                "predicted_bpb": round(self.predicted_bpb, 4), "reasons": self.reasons}


def plan(ws, req: PlanRequest, say=None) -> Plan:
    """The recipe for ``req.minutes`` on this machine with tokenizer ``req.tokenizer``."""
    import torch

    from workbench.tokenizer.tokenizer import tokenizer_info

    req.validate()
    if req.threads:
        torch.set_num_threads(req.threads)
    if req.tokenizer is not None:
        info = tokenizer_info(ws, req.tokenizer)
        vocab = int(info.stats.get("vocab_size") or info.settings.get("vocab_size"))
    else:
        vocab = int(req.vocab)
    law = load_law()
    recipe = law["recipe"]
    optimizer = recipe.get("train", {}).get("optimizer", "adamw")
    seconds = req.minutes * 60 * STEP_SHARE
    rows = []
    for dim, layers in SHAPES:
        cfg = shape_config(dim, layers, vocab, recipe)
        cached = throughput(cfg, BATCH, req.precision, optimizer, measure=False)
        if cached is None and say:
            say(f"measuring training speed at dim {dim}, {layers} layers (once per machine) …")
        tp = throughput(cfg, BATCH, req.precision, optimizer)
        tokens = tp["tok_s"] * seconds
        n = body_params(cfg)
        rows.append({"dim": dim, "n_layers": layers, "n_heads": cfg.n_heads, "params": cfg.n_params,
                     "body_params": n, "tok_s": tp["tok_s"], "tokens": int(tokens),
                     "tokens_per_param": round(tokens / cfg.n_params, 1),
                     "predicted_bpb": round(predicted_bpb(law, n, tokens), 4), "precision": tp["precision"]})
    best = min(rows, key=lambda r: r["predicted_bpb"])
    model = shape_config(best["dim"], best["n_layers"], vocab, recipe)
    steps = best["tokens"] / (BATCH * SEQ_LEN)
    tr = recipe.get("train", {})
    train = TrainConfig(
        batch_size=BATCH, lr=tr.get("lr", 2e-3), min_lr=tr.get("min_lr", tr.get("lr", 2e-3) / 10),
        warmup_steps=int(min(tr.get("warmup_steps", 100), max(10, steps * 0.05))),
        schedule=tr.get("schedule", "cosine"), decay_fraction=tr.get("decay_fraction", 0.2),
        optimizer=optimizer, weight_decay=tr.get("weight_decay", 0.1),
        max_steps=None, max_minutes=float(req.minutes),
        eval_interval=max(50, int(steps / 10)), eval_batches=20, log_interval=max(1, min(50, int(steps / 200) or 1)),
        checkpoint_interval=max(100, int(steps / 5)), precision=req.precision, num_threads=req.threads or 0)
    name = f"plan-{_fmt_minutes(req.minutes)}"
    cfg = Config(model, train, name=name,
                 description=f"planned for {_fmt_minutes(req.minutes)} on this machine: {best['tokens']:,} tokens "
                             f"at {best['tok_s']:,.0f} tok/s, predicted {best['predicted_bpb']:.3f} bits/byte")
    second = sorted(rows, key=lambda r: r["predicted_bpb"])[1] if len(rows) > 1 else None
    reasons = [
        f"{len(rows)} shapes measured on this machine ({best['precision']}, {torch.get_num_threads()} thread(s)); "
        f"each gets its tokens/s x {_fmt_minutes(req.minutes)}",
        f"picked dim {best['dim']}, {best['n_layers']} layers, {best['n_heads']} heads "
        f"({best['params'] / 1e6:.2f}M parameters, {best['body_params'] / 1e6:.2f}M outside the embedding): "
        f"{best['tok_s']:,.0f} tok/s buys {best['tokens']:,} tokens, {best['tokens_per_param']:g} per parameter",
        f"predicted {best['predicted_bpb']:.3f} bits/byte by the rule fitted to measured runs "
        f"({law.get('source', 'benchmarks/PLANNER.md')})"
        + (f"; next best dim {second['dim']} x {second['n_layers']} at {second['predicted_bpb']:.3f}" if second else ""),
        f"recipe from the sweeps: {optimizer}, lr {train.lr:g} -> {train.min_lr:g}, {train.schedule} over the "
        f"time budget, {train.warmup_steps} warm-up steps, batch {BATCH} x {SEQ_LEN}",
    ]
    return Plan(cfg, float(req.minutes), best["tokens"], best["tok_s"], best["predicted_bpb"], reasons, rows,
                _vocab_advice(law, vocab))


def _vocab_advice(law: dict, vocab: int) -> str | None:
    best = law.get("best_vocab")
    if not best or best == vocab:
        return None
    return (f"vocab {best} measured better than {vocab} at this scale ({law.get('vocab_note', 'see benchmarks/PLANNER.md')}); "
            f"a tokenizer of {best} pieces would likely do better")


def _fmt_minutes(m: float) -> str:
    if m >= 60 and float(m / 60).is_integer():
        return f"{int(m // 60)}h"
    return f"{m:g}min"


class BudgetSpeeds:
    """``budget_speed`` for a form that asks on every keystroke (the Config pane): answered from
    memory, else from the probe cache on disk. A shape measured nowhere yet stays unknown until
    ``measure`` (seconds: call it from a worker) has run; a shape torch cannot run here gets
    ``{"error": why}`` instead of an exception."""

    def __init__(self):
        self._known: dict[str, dict] = {}

    @staticmethod
    def key(model: ModelConfig, train: TrainConfig) -> str:
        return repr((model.to_dict(), train.batch_size, train.precision, train.optimizer))

    def known(self, model: ModelConfig, train: TrainConfig) -> dict | None:
        key = self.key(model, train)
        if key not in self._known:
            speed = budget_speed(model, train, measure=False)
            if speed is not None:
                self._known[key] = speed
        return self._known.get(key)

    def measure(self, model: ModelConfig, train: TrainConfig) -> dict:
        try:
            speed = budget_speed(model, train, measure=True)
        except Exception as e:
            speed = {"error": str(e).splitlines()[0][:120] if str(e) else type(e).__name__}
        self._known[self.key(model, train)] = speed
        return speed


def budget_speed(model: ModelConfig, train: TrainConfig, measure: bool = True) -> dict | None:
    """This machine's measured tokens/s for a config trained on the CPU (cached per shape), and
    the tokens its time budget buys: what the Config pane's estimates show. None when not
    measured yet and ``measure`` is False."""
    tp = throughput(model, train.batch_size, train.precision, train.optimizer, measure)
    if tp is None:
        return None
    out = dict(tp)
    if train.max_minutes:
        out["tokens"] = int(tp["tok_s"] * train.max_minutes * 60 * STEP_SHARE)
    return out
