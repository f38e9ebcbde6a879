"""What a config implies without building the model: parameter counts and FLOPs per token.

The formulas mirror the model package layer by layer, so the parameter count is exact (a test
checks it against ``sum(p.numel())`` for every variant combination) and the FLOPs match what
``FlopCounterMode`` counts. No torch import: the app shows these numbers while the user types.

A config that chooses an experiment's variant (whose parameters no formula here knows) is
counted from the model built on torch's ``meta`` device instead (shapes only, no memory; torch
is loaded already, by the experiment file): parameters exactly, per part by module name, and
the matmul weights as those of its linear layers.
"""

from __future__ import annotations

from typing import Any, Optional

# the annotations' workbench.config.schema.ModelConfig: schema imports this module (n_params), so
# this one does not import schema back, not even for type checkers
ModelConfig = Any


# ---------------------------------------------------------------- parameters

def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Exact parameter count per part of the model (tied head counted once, in embedding)."""
    if uses_experiment(cfg):
        return dict(_built(cfg)[0])
    C, V, L = cfg.dim, cfg.vocab_size, cfg.n_layers
    H, Hkv, D, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.ffn_dim
    b = 1 if cfg.bias else 0
    norm = C + (C * b if cfg.norm == "layernorm" else 0)
    qkv_out = (H + 2 * Hkv) * D
    attn = C * qkv_out + qkv_out * b + H * D * C + C * b
    up = 2 * F if cfg.mlp == "swiglu" else F
    mlp = C * up + up * b + F * C + C * b
    out = {
        "embedding": V * C,
        "positions": cfg.max_seq_len * C if cfg.pos == "learned" else 0,
        "attention": L * attn,
        "mlp": L * mlp,
        "norms": (2 * L + 1) * norm,
        "lm_head": 0 if cfg.tie_embeddings else V * C,
    }
    if cfg.arch == "value_embed":  # tables of V x (kv heads x head dim); two mixing weights per fed layer
        tables = min(cfg.ve_layers, L)
        fed = len(set(range(tables)) | set(range(L - tables, L)))
        out["value_embeds"] = tables * V * Hkv * D + 2 * fed
    return out


def param_count(cfg: ModelConfig) -> int:
    return sum(param_breakdown(cfg).values())


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token (embedding lookups and norms do not)."""
    if uses_experiment(cfg):
        return _built(cfg)[1]
    C, L = cfg.dim, cfg.n_layers
    H, Hkv, D, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.ffn_dim
    up = 2 * F if cfg.mlp == "swiglu" else F
    return L * (C * (H + 2 * Hkv) * D + H * D * C + C * up + F * C) + cfg.vocab_size * C


def uses_experiment(cfg: ModelConfig) -> bool:
    """Whether ``cfg`` chooses a model part that is not built in."""
    from workbench.experiments.registry import get, section_parts

    return any(not get(part, getattr(cfg, field)).builtin for field, part in section_parts("model").items())


_BUILT: dict = {}


def _built(cfg: ModelConfig) -> tuple[tuple, int, int]:
    """(parameters per part, matmul weights, hidden matrices: the linear layers' weights but the
    output head's, as Muon takes them) of the model ``cfg`` builds, on the meta device;
    kept per config and per the variant classes it uses (a reloaded file counts again)."""
    from workbench.experiments.registry import get, section_parts

    key = (cfg, tuple(id(get(part, getattr(cfg, f)).resolve()) for f, part in section_parts("model").items()))
    if key not in _BUILT:
        from torch import nn

        from workbench.model.transformer import build_model

        model = build_model(cfg, device="meta")
        parts = dict.fromkeys(("embedding", "positions", "attention", "mlp", "norms", "lm_head", "other"), 0)
        for name, p in model.named_parameters():
            words = name.split(".")
            part = ("embedding" if words[0] == "tok_emb" else "positions" if words[0] == "pos"
                    else "lm_head" if words[0] == "lm_head" else "attention" if "attn" in words
                    else "mlp" if "mlp" in words else "norms" if len(words) > 1 and "norm" in words[-2]
                    else "other")
            parts[part] += p.numel()
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        matmul = sum(m.weight.numel() for m in linear)
        hidden = sum(m.weight.numel() for m in linear if m is not model.lm_head)
        if len(_BUILT) > 64:
            _BUILT.clear()
        _BUILT[key] = (tuple(parts.items()), matmul, hidden)
    return _BUILT[key]


# ---------------------------------------------------------------- FLOPs

def flops_per_token(cfg: ModelConfig, seq_len: Optional[int] = None) -> dict[str, int]:
    """Forward and training FLOPs per token at context length ``seq_len`` (default max).

    Counts 2 FLOPs per multiply-add of every matmul, and attention's QK^T and AV over the
    full T x T matrix (as FlopCounterMode and the PaLM paper do; a causal kernel may skip
    about half of it). Training = forward + backward = 3 x forward.
    """
    T = cfg.max_seq_len if seq_len is None else seq_len
    attention = 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T
    forward = 2 * matmul_params(cfg) + attention
    return {"forward": forward, "train": 3 * forward, "attention_forward": attention}


def hidden_matrix_params(cfg: ModelConfig) -> int:
    """Parameters of the 2-D hidden matrices (attention and MLP projections): what Muon trains."""
    if uses_experiment(cfg):
        return _built(cfg)[2]
    b = param_breakdown(cfg)
    C, L = cfg.dim, cfg.n_layers
    biases = 0
    if cfg.bias:
        up = 2 * cfg.ffn_dim if cfg.mlp == "swiglu" else cfg.ffn_dim
        biases = L * ((cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_dim + C + up + C)
    return b["attention"] + b["mlp"] - biases
