"""The Llama view of our model, shared by the formats other programs read (hf, gguf, llama2c).

Three things every Llama-style format needs, each done once here:

* **which configs are a Llama** — ``llama_incompatibilities`` names every switch a format cannot
  express, including model fields added after this exporter was written (a field it does not
  know is refused unless it holds its default, so a new variant is never exported silently
  wrong);
* **the tensors under Llama's roles** — ``llama_tensors`` splits our fused q/k/v projection
  (rows: H query heads, then Hkv key heads, then Hkv value heads) and accepts the older fused
  SwiGLU ``w13`` too;
* **the RoPE layout** — our RoPE rotates the first half of each head against the second (the
  half-split layout of ``model/positions.py``, which is transformers' ``rotate_half``), while
  Meta's checkpoints, llama2.c's ``run.c`` and llama.cpp's ``llama`` architecture rotate
  adjacent pairs (2j, 2j+1). ``interleave_heads`` reorders the q and k rows so that pair j of
  every head sits at rows 2j and 2j+1: the same rotation, applied by a reader that pairs
  neighbours. Attention scores are unchanged because q and k move together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The values a Llama has; each format may add its own (run.c hard-codes a few more).
LLAMA = {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu", "bias": False}
# Fields a Llama export writes as shape or hyperparameters, or that only matter in training.
HANDLED = {"vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "multiple_of",
           "norm_eps", "rope_theta", "max_seq_len", "dropout", "tie_embeddings", *LLAMA}


def llama_incompatibilities(cfg, reader: str, also: dict | None = None,
                            reasons: dict | None = None, allow: dict | None = None) -> list[str]:
    """Why ``cfg`` cannot be written for ``reader`` (e.g. "Llama", "run.c"); empty when it can.

    ``also`` adds required values (field -> value) and ``reasons`` explains them; ``allow``
    names other values a format can hold too (field -> tuple; hf holds ``mlp: relu2``)."""
    need = {**LLAMA, **(also or {})}
    why = []
    for f in dataclasses.fields(cfg):
        if f.metadata.get("hidden"):
            continue  # a variant's options: the variant itself is named (a non-default choice)
        value = getattr(cfg, f.name)
        if f.name in need:
            if value != need[f.name] and value not in (allow or {}).get(f.name, ()):
                reason = (reasons or {}).get(f.name) or (
                    f"{reader} has no bias terms" if f.name == "bias" else f"{reader} uses {_show(need[f.name])}")
                why.append(f"{f.name} is {_show(value)} ({reason})")
        elif f.name not in HANDLED and value != f.default:
            why.append(f"{f.name} is {_show(value)}, a switch this exporter does not know "
                       f"({reader} can only be given the default {_show(f.default)})")
    return why


def _show(v) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v)


@dataclass
class LlamaLayer:
    attn_norm: "object"
    q: "object"            # (H*D, C), half-split RoPE layout
    k: "object"            # (Hkv*D, C)
    v: "object"
    o: "object"            # (C, H*D)
    mlp_norm: "object"
    gate: "object"         # (F, C)  w1
    up: "object"           # (F, C)  w3
    down: "object"         # (C, F)  w2


@dataclass
class LlamaTensors:
    embed: "object"        # (V, C)
    norm: "object"         # (C,)
    lm_head: "object | None"  # (V, C); None when tied to the embedding
    layers: list[LlamaLayer]


def llama_tensors(model) -> LlamaTensors:
    """Our parameters (on the CPU, detached) under Llama's roles, fused projections split."""
    cfg = model.config
    H, Hkv, D, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.ffn_dim
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    layers = []
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        q, k, v = _unfused(sd, p + "attn.", "wqkv", ("wq", "wk", "wv"), (H * D, Hkv * D, Hkv * D))
        if cfg.mlp == "relu2":  # relu(w1 x)² = relu(w1 x) · (w1 x): a gated MLP whose gate and up are w1
            gate = sd[p + "mlp.w1.weight"]
            up = gate.clone()  # its own storage: safetensors refuses two names for one tensor
        else:
            gate, up = _unfused(sd, p + "mlp.", "w13", ("w1", "w3"), (F, F))
        layers.append(LlamaLayer(sd[p + "attn_norm.weight"], q, k, v, sd[p + "attn.wo.weight"],
                                 sd[p + "mlp_norm.weight"], gate, up, sd[p + "mlp.w2.weight"]))
    return LlamaTensors(sd["tok_emb.weight"], sd["norm.weight"],
                        None if cfg.tie_embeddings else sd["lm_head.weight"], layers)


def llama_named(model, top: dict[str, str], layer: str, roles: dict[str, str],
                interleave: bool) -> dict:
    """Our tensors under a format's names: ``top`` names embed, norm and lm_head (left out when
    tied); ``layer`` (with ``{i}``) + ``roles[role]`` names each LlamaLayer field; with
    ``interleave`` q and k rows are in the interleaved RoPE order."""
    cfg = model.config
    t = llama_tensors(model)
    out = {top["embed"]: t.embed, top["norm"]: t.norm}
    if t.lm_head is not None:
        out[top["lm_head"]] = t.lm_head
    for i, L in enumerate(t.layers):
        for role, name in roles.items():
            w = getattr(L, role)
            if interleave and role in ("q", "k"):
                w = interleave_heads(w, cfg.n_heads if role == "q" else cfg.kv_heads)
            out[layer.format(i=i) + name] = w.contiguous()
    return out


def _unfused(sd: dict, prefix: str, fused: str, parts: tuple[str, ...], sizes: tuple[int, ...]):
    """Projections stored fused (one matrix, rows stacked) or apart; the model has used both
    layouts, and checkpoints of either should export."""
    key = f"{prefix}{fused}.weight"
    if key in sd:
        return tuple(t.contiguous() for t in sd[key].split(sizes, dim=0))
    return tuple(sd[f"{prefix}{p}.weight"] for p in parts)


def interleave_heads(w, n_heads: int):
    """q or k rows (n_heads*D, C) from the half-split RoPE layout to the interleaved one:
    row h*D + 2j + a takes row h*D + a*D/2 + j (a in {0, 1}, j < D/2)."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()


def deinterleave_heads(w, n_heads: int):
    """The inverse of ``interleave_heads``: q or k rows from the interleaved RoPE layout (Meta's,
    run.c's, llama.cpp's) back to our half-split one."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()


# --- the other way: a Llama's tensors into our model (``workbench import``) -----------------


@dataclass
class Imported:
    """What a format's ``read`` makes of a file (``workbench import``): the model config, the
    tensors under Llama's roles (q and k already in our order), the sentencepiece model, and
    what to record of where it came from. Nothing is written until the importer has checked it."""

    fmt: str
    config: "object"          # ModelConfig
    tensors: LlamaTensors
    tokenizer: bytes          # a sentencepiece ModelProto
    options: dict             # the format's own facts (llama2c version, gguf dtypes, ...)
    specials: dict | None = None  # special ids the file itself names (bos, eos): checked against the tokenizer's


def llama_config(where: str, mlp: str = "swiglu", **fields):
    """A ModelConfig holding a Llama of these shapes (``vocab_size, dim, n_layers, n_heads,
    n_kv_heads, hidden_dim, norm_eps, rope_theta, max_seq_len, tie_embeddings``) and MLP (SwiGLU,
    or ReLU² where the format holds it), or a WorkbenchError naming ``where`` the values came
    from and the field our model refuses."""
    from workbench.config.schema import ModelConfig
    from workbench.errors import ConfigError, WorkbenchError

    for k, v in fields.items():
        if isinstance(v, bool) != (k == "tie_embeddings") or not isinstance(v, (int, float)):
            raise WorkbenchError(f"{where}: {k} is {v!r}, not a number")
    try:
        return ModelConfig(**{**LLAMA, "mlp": mlp}, **fields)
    except ConfigError as e:
        raise WorkbenchError(f"{where} describes a model workbench cannot build: {e}") from None


def llama_from_named(named: dict, cfg, top: dict[str, str], layer: str, roles: dict[str, str],
                     interleave: bool) -> LlamaTensors:
    """The inverse of ``llama_named``: a format's tensors (name -> 2-D or 1-D torch tensor, the
    head left out when tied) under Llama's roles, q and k back in our half-split order when the
    format stores them ``interleave``d. A missing name raises KeyError naming it."""
    layers = []
    for i in range(cfg.n_layers):
        got = {}
        for role, name in roles.items():
            w = named[layer.format(i=i) + name]
            if interleave and role in ("q", "k"):
                w = deinterleave_heads(w, cfg.n_heads if role == "q" else cfg.kv_heads)
            got[role] = w
        layers.append(LlamaLayer(**got))
    return LlamaTensors(named[top["embed"]], named[top["norm"]],
                        None if cfg.tie_embeddings else named[top["lm_head"]], layers)


def llama_shapes(cfg, top: dict[str, str], layer: str, roles: dict[str, str]) -> dict[str, tuple]:
    """Every tensor a format stores for a Llama of ``cfg``, with the shape in torch's (out, in)
    order: what an import checks a file against before it reads a single weight."""
    per = role_shapes(cfg)
    out = {top["embed"]: per["embed"], top["norm"]: per["norm"]}
    if not cfg.tie_embeddings:
        out[top["lm_head"]] = per["lm_head"]
    for i in range(cfg.n_layers):
        for role, name in roles.items():
            out[layer.format(i=i) + name] = per[role]
    return out


def role_shapes(cfg) -> dict[str, tuple]:
    """The shape of each Llama role (a layer's roles, and embed, norm, lm_head) for ``cfg``."""
    C, V, F = cfg.dim, cfg.vocab_size, cfg.ffn_dim
    Dq, Dkv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return {"embed": (V, C), "norm": (C,), "lm_head": (V, C), "attn_norm": (C,), "q": (Dq, C), "k": (Dkv, C),
            "v": (Dkv, C), "o": (C, Dq), "mlp_norm": (C,), "gate": (F, C), "up": (F, C), "down": (C, F)}


def our_state_dict(t: LlamaTensors, cfg) -> dict:
    """The inverse of ``llama_tensors``: Llama-role tensors as our model's ``state_dict`` (q, k,
    v fused into ``wqkv``; a tied head under its own key too, so a strict load takes it)."""
    import torch

    sd = {"tok_emb.weight": t.embed, "norm.weight": t.norm,
          "lm_head.weight": t.embed if t.lm_head is None else t.lm_head}
    for i, L in enumerate(t.layers):
        p = f"layers.{i}."
        sd.update({p + "attn_norm.weight": L.attn_norm, p + "attn.wqkv.weight": torch.cat([L.q, L.k, L.v], 0),
                   p + "attn.wo.weight": L.o, p + "mlp_norm.weight": L.mlp_norm, p + "mlp.w2.weight": L.down})
        if cfg.mlp == "relu2":  # gate and up are one matrix (``llama_tensors``; checked equal on import)
            sd[p + "mlp.w1.weight"] = L.up
        else:
            sd.update({p + "mlp.w1.weight": L.gate, p + "mlp.w3.weight": L.up})
    return {k: v.float().contiguous() for k, v in sd.items()}


def check_tensors(got: dict[str, tuple], want: dict[str, tuple], ignore=lambda name: False) -> None:
    """Refuse a file's tensors (``got``: name -> shape, torch's order) that are not exactly
    ``want``: the first one missing, of another shape, or that the model has no place for, by name."""
    from workbench.errors import WorkbenchError

    for name, shape in want.items():
        if name not in got:
            raise WorkbenchError(f"the weights have no {name}")
        have = tuple(got[name])
        if have != tuple(shape):
            raise WorkbenchError(f"{name} has shape {have}, the config says {tuple(shape)}")
    extra = [n for n in got if n not in want and not ignore(n)]
    if extra:
        raise WorkbenchError(f"the weights hold {extra[0]}, which a Llama of this config has no place for")
