"""Memory estimates from a config alone, without building the model, and whether it fits here.

(Parameter counts and FLOPs are ``workbench.config.sizes``.) Activation memory starts from the tensors autograd saves for
the backward pass in this implementation (exact; checked against saved-tensor hooks) and adds
the backward pass's working memory and the logits' copies, which dominate at large vocabularies.

No torch import at module level: the app shows these numbers while the user types.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional
from workbench.config.sizes import hidden_matrix_params, param_count
from workbench.machine.choices import attention_for, precision_for
from workbench.machine.device import device_name

if TYPE_CHECKING:  # only for annotations: config imports this module, not the other way round
    from workbench.config.schema import ModelConfig

GiB = 1024**3
MiB = 1024**2

# Resident memory of a process that has imported torch and run a step, before any model
# tensor: measured ~220 MiB after `import torch` on Linux CPU builds, plus thread pools and
# allocator slack. On CUDA the context costs about this much device memory too.
RUNTIME_OVERHEAD = {"cpu": 260 * MiB, "cuda": 500 * MiB, "mps": 300 * MiB}

# Below this share of the available memory a run "fits"; up to all of it is "tight".
TIGHT_FRACTION = 0.8


# ---------------------------------------------------------------- memory

def dtype_bytes(precision: str) -> int:
    return 2 if precision in ("bf16", "fp16") else 4


def saved_activation_bytes(cfg: ModelConfig, batch_size: int, seq_len: Optional[int] = None,
                           precision: str = "fp32", fused_loss: bool = False,
                           attention: str = "sdpa") -> int:
    """Bytes autograd saves for the backward pass in this implementation (tested exactly).

    ``fused_loss``: the loss comes from ``forward(idx, targets=...)`` (what CPU training runs),
    which keeps the hidden states' gradient instead of the log-softmax of the logits.
    ``attention``: the kernel (``"explicit"`` keeps the probabilities and copies of q, k, v)."""
    T = cfg.max_seq_len if seq_len is None else seq_len
    C, V, L = cfg.dim, cfg.vocab_size, cfg.n_layers
    H, Hkv, D, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.ffn_dim
    # one norm saves its input, its normalised value and output (rmsnorm: + rstd per token;
    # layernorm: its fused kernel keeps mean and rstd but not the normalised value)
    norm_extra = 2 * C + 1 if cfg.norm == "rmsnorm" else C + 2
    attn = (H + 2 * Hkv) * D + H * D + H  # fused qkv output, attention output, logsumexp
    if cfg.pos == "rope":
        attn += (H + Hkv) * D  # rotated q and k
    if cfg.qk_norm:
        attn += H + Hkv  # one rstd per head (the normalised q and k are the rotation's input)
    if attention == "explicit":
        attn += 3 * H * D + H * T - H  # q, k, v as (B*H, T, D) copies, probabilities; no logsumexp
    mlp = 4 * F if cfg.mlp == "swiglu" else 2 * F  # relu2: relu's and square's outputs, as gelu
    per_layer = 2 * C + 2 * norm_extra + attn + mlp  # 2C: residual stream in and mid-block
    if cfg.dropout > 0:
        # masks (1 byte) and, because SDPA drops to its math path, the score matrices
        per_layer += (3 * C + H * T) / 4 + 2 * H * T
    # final norm, then the saved log-softmax, or (fused) the gradient of the hidden states
    top = C + norm_extra + (C if fused_loss else V)
    if cfg.logit_softcap and not fused_loss:
        top += V  # tanh keeps its output
    elems = batch_size * T * (L * per_layer + top)
    return int(elems * dtype_bytes(precision) + batch_size * T * 8)  # + int64 token ids


# Backward working memory, on top of what is saved: the gradient flowing through a block and
# the kernels' temporaries keep about half as much again alive (plus allocator slack), and
# the logits exist four times at the start of backward (logits, saved log-softmax, and the
# gradients of both). Fitted to peak RSS on CPU; the benchmark checks it stays within 25%.
BACKWARD_FACTOR = 1.5
LOGIT_COPIES_BEYOND_SAVED = 3


def activation_bytes(cfg: ModelConfig, batch_size: int, seq_len: Optional[int] = None,
                     precision: str = "fp32", fused_loss: bool = False, attention: str = "sdpa") -> int:
    """Peak activation memory of a training step: saved tensors plus backward working memory.
    The fused loss holds the logits' gradient once, in the compute dtype, while it runs."""
    T = cfg.max_seq_len if seq_len is None else seq_len
    saved = saved_activation_bytes(cfg, batch_size, T, precision, fused_loss, attention)
    logits = batch_size * T * cfg.vocab_size * dtype_bytes(precision)
    copies = 1 if fused_loss else LOGIT_COPIES_BEYOND_SAVED
    return int(BACKWARD_FACTOR * saved + copies * logits)


@dataclass
class MemoryEstimate:
    """Bytes needed for one training step; ``total`` includes the runtime's own footprint."""

    weights: int
    grads: int
    optimizer: int
    activations: int
    runtime: int
    total: int
    batch_size: int
    seq_len: int
    precision: str
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def training_memory(cfg: ModelConfig, batch_size: int, seq_len: Optional[int] = None,
                    precision: str = "fp32", device: str = "cpu", optimizer: str = "adamw") -> MemoryEstimate:
    """Peak memory of a training step with AdamW.

    Master weights, gradients and both AdamW moments stay in fp32 under mixed precision;
    autocast adds a half-precision copy of the weights and halves the activations.
    """
    device = "cpu" if device == "auto" else device
    precision = precision_for(precision, device)[0]  # the cached measurement: no torch
    n = param_count(cfg)
    weights = 4 * n + (2 * n if precision in ("bf16", "fp16") else 0)
    grads = 4 * n
    # AdamW keeps two moments a parameter; Muon one momentum buffer for the hidden matrices
    optimizer = 8 * n - (4 * hidden_matrix_params(cfg) if optimizer == "muon" else 0)
    T = cfg.max_seq_len if seq_len is None else seq_len
    fused = device == "cpu"  # CPU training computes the loss without full logits
    acts = activation_bytes(cfg, batch_size, T, precision, fused,
                            attention_for(cfg, batch_size, precision, device)[0])
    runtime = RUNTIME_OVERHEAD.get(device, RUNTIME_OVERHEAD["cpu"])
    total = weights + grads + optimizer + acts + runtime
    return MemoryEstimate(weights, grads, optimizer, acts, runtime, total, batch_size, T,
                          precision, device)


def kv_cache_bytes(cfg: ModelConfig, batch_size: int = 1, seq_len: Optional[int] = None,
                   precision: str = "fp32") -> int:
    """Keys and values for every layer: 2 x L x B x Hkv x S x D elements."""
    S = cfg.max_seq_len if seq_len is None else seq_len
    return 2 * cfg.n_layers * batch_size * cfg.kv_heads * S * cfg.head_dim * dtype_bytes(precision)


# ---------------------------------------------------------------- will it fit?

def available_memory(device: str = "cpu") -> dict:
    """Memory free right now for ``device`` (RAM via psutil; CUDA via torch, imported lazily)."""
    import psutil

    vm = psutil.virtual_memory()
    out = {"device": device, "available": int(vm.available), "total": int(vm.total)}
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            out.update(available=int(free), total=int(total))
        else:
            out.update(available=0, total=0, note="CUDA is not available")
    return out


@dataclass
class Verdict:
    verdict: str  # "fits", "tight" or "won't fit"
    needed: int
    available: int
    device: str

    @property
    def message(self) -> str:
        return (f"{self.verdict}: needs {fmt_bytes(self.needed)} of {fmt_bytes(self.available)} "
                f"available on {self.device}")


def verdict(needed: int, available: int, device: str = "cpu") -> Verdict:
    if available <= 0 or needed > available:
        v = "won't fit"
    elif needed > TIGHT_FRACTION * available:
        v = "tight"
    else:
        v = "fits"
    return Verdict(v, int(needed), int(available), device)


def fit(cfg: ModelConfig, batch_size: int, seq_len: Optional[int] = None,
        precision: str = "auto", device: str = "auto") -> tuple[MemoryEstimate, Verdict]:
    """Training memory for ``device`` and the verdict against what is free there now."""
    device = device_name(device)
    mem = training_memory(cfg, batch_size, seq_len, precision, device)
    avail = available_memory(device)["available"]
    return mem, verdict(mem.total, avail, device)


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
