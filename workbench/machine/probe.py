"""Measured facts about this machine that pick defaults, cached per machine.

Two measurements decide how a run trains when its config says ``auto``:

* ``matmul_probe``: the CPU's bf16 and fp32 matrix-multiply speed at a training-sized shape
  (about half a second). bf16 autocast is the CPU default only where bf16 measured clearly faster
  (``BF16_MIN_SPEEDUP``): on CPUs with native bf16 units it runs several times faster, on CPUs
  without them it emulates and runs slower. The decision comes from the measurement, never from a
  list of CPU names.
* ``attention_probe``: which causal-attention kernel (torch's fused SDPA, or the explicit
  matmul-softmax-matmul) is faster for one training shape and dtype; for small heads in bf16 the
  explicit one can win, with small ones in fp32 SDPA does.

Results live in one JSON file per machine in the user's cache folder (``$WORKBENCH_CACHE_DIR``,
else ``$XDG_CACHE_HOME/workbench``, else ``~/.cache/workbench``), keyed by the CPU and the torch
version, so each is measured once (with the thread count of the process that measured it; the
ratios compared here barely move with it). Tests inject a measurement by writing
that file (``write_cached``). Nothing here imports torch at module level: the Config pane reads
the cached decision without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

CACHE_ENV = "WORKBENCH_CACHE_DIR"
CACHE_VERSION = 1
# bf16 autocast also pays for casts and keeps fp32 master weights: below this matmul speed-up
# it does not win a whole training step (measured: 4.5x matmul gave 1.3-1.9x per step).
BF16_MIN_SPEEDUP = 1.5
# The explicit attention keeps a (B, H, T, T) probability tensor per layer for backward; past
# this many bytes in all it is never chosen, whatever its speed.
EXPLICIT_ATTENTION_MAX_BYTES = 1 << 30
# The explicit kernel must win by this much to replace SDPA (measurements wobble by a few %).
KERNEL_MIN_GAIN = 1.05


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "workbench"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool | None:
    """What the CPU flags say (x86 avx512_bf16 / amx_bf16; None where flags are not readable).
    Reported beside the measurement; the decision never rests on it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return None


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # not installed as a distribution: the module knows
        import torch

        return torch.__version__


def machine_key() -> str:
    raw = f"{cpu_name()}|{platform.machine()}|{os.cpu_count()}|torch {_torch_version()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cache_file() -> Path:
    return cache_dir() / f"probe-{machine_key()}.json"


def read_cached() -> dict:
    p = cache_file()
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) and d.get("version") == CACHE_VERSION else {}


def write_cached(entries: dict) -> None:
    """Merge ``entries`` into this machine's cache file (atomically; a cache that cannot be
    written only means measuring again next time)."""
    from workbench.fileio import write_json

    d = read_cached() or {"version": CACHE_VERSION, "cpu": cpu_name(), "torch": _torch_version()}
    d.update(entries)
    try:
        write_json(cache_file(), d)
    except OSError:
        pass


# What the cache holds, by kind: the matmul probe (precision: auto), the attention kernels
# measured per shape, and the planner's training speeds per candidate shape.
KINDS = {"matmul": lambda key: key == "matmul", "attention": lambda key: key.startswith("attention "),
         "speed": lambda key: key.startswith("throughput ")}
META_KEYS = ("version", "cpu", "torch")


def cached_entries() -> dict:
    """The cached measurements by key (the file's own bookkeeping left out)."""
    return {k: v for k, v in read_cached().items() if k not in META_KEYS}


def forget(kinds) -> list[str]:
    """Drop the cached measurements of ``kinds`` (names of ``KINDS``; "all" for every kind), so
    they are measured again when next needed; the keys dropped. A stale figure (a busy machine
    when it was taken, another torch) goes this way: `workbench probe --remeasure`."""
    from workbench.errors import WorkbenchError
    from workbench.fileio import write_json

    kinds = tuple(KINDS) if "all" in kinds else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise WorkbenchError(f"{bad[0]!r} is not a kind of measurement: expected all, {', '.join(KINDS)}")
    d = read_cached()
    gone = [k for k in d if k not in META_KEYS and any(KINDS[kind](k) for kind in kinds)]
    if gone:
        write_json(cache_file(), {k: v for k, v in d.items() if k not in gone})
    return gone


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def cached_measurement(key: str, measure_fn, measure: bool = True, announce=None) -> dict | None:
    """The cached measurement ``key`` (with ``cached: True``), else ``measure_fn()`` stored
    under it when ``measure`` (``announce()`` first, so a caller can say it will take a while),
    else None."""
    d = read_cached().get(key)
    if d:
        return {**d, "cached": True}
    if not measure:
        return None
    if announce is not None:
        announce()
    d = measure_fn()
    write_cached({key: d})
    return {**d, "cached": False}


# ---------------------------------------------------------------- bf16 vs fp32 matmul

def best_matmul_seconds(a, b, seconds: float, windows: int = 3, max_reps: int = 200) -> float:
    """The best seconds per ``a @ b`` in about ``seconds``: after a warm-up call (oneDNN picks
    and JITs its kernel), ``windows`` timed windows of as many calls as fit one. A call that
    alone outlasts a window is timed once: an emulated dtype runs at 1/80 of fp32 and more, its
    figure needs no more precision, and each of its calls can take seconds."""
    a @ b
    t = time.perf_counter()
    a @ b
    one = max(time.perf_counter() - t, 1e-6)
    window = seconds / windows
    if one > window:
        return one
    reps = max(2, min(max_reps, int(window / one)))
    best = one
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def _gflops(dtype, m: int, k: int, n: int, seconds: float) -> float:
    import torch

    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    return 2 * m * k * n / best_matmul_seconds(a, b, seconds) / 1e9


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def measure_matmul(seconds: float = 0.2) -> dict:
    """fp32 and bf16 GFLOP/s of a (2048 x 256) @ (256 x 1024) matmul, the size of a small
    model's projections over a batch; ``seconds`` per dtype."""
    import torch

    shape = (2048, 256, 1024)
    fp32 = _gflops(torch.float32, *shape, seconds)
    bf16 = _gflops(torch.bfloat16, *shape, seconds)
    # significant figures, not decimals: an emulated bf16 can be 1-2 GFLOP/s, 1/80 of fp32
    return {"fp32_gflops": _sig(fp32), "bf16_gflops": _sig(bf16), "bf16_speedup": _sig(bf16 / fp32),
            "shape": list(shape), "threads": _threads(),
            "native_bf16_flag": cpu_has_native_bf16(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def matmul_probe(measure: bool = True, announce=None) -> dict | None:
    """This machine's matmul measurement (cached; measured now if missing and ``measure``)."""
    return cached_measurement("matmul", measure_matmul, measure, announce)


def cpu_precision_choice(probe: dict | None) -> tuple[str, str]:
    """(precision, reason) for ``precision: auto`` on a CPU, from a matmul probe."""
    if not probe:
        return "fp32", "auto; this CPU's bf16 speed has not been measured yet"
    s = probe["bf16_speedup"]
    facts = f"bf16 matmul {probe['bf16_gflops']:g} vs fp32 {probe['fp32_gflops']:g} GFLOP/s, {s:.2f}x"
    if s >= BF16_MIN_SPEEDUP:
        return "bf16", f"auto; {facts} on this CPU: bf16 autocast, fp32 master weights"
    return "fp32", f"auto; bf16 is not faster on this CPU ({facts})"


# ---------------------------------------------------------------- attention kernel

def explicit_attention_bytes(batch_size: int, n_heads: int, seq_len: int, n_layers: int, dtype_bytes: int) -> int:
    """What the explicit kernel keeps for backward: one (B, H, T, T) probability tensor a layer."""
    return batch_size * n_heads * seq_len * seq_len * dtype_bytes * n_layers


def measure_attention(n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int, dtype_name: str,
                      batch_size: int = 2, reps: int = 3) -> dict:
    """Forward + backward time (ms) of each kernel on random q, k, v of one layer's shape,
    alternating, median of ``reps``. The batch is kept small: both kernels scale linearly in it."""
    import statistics

    import torch

    from workbench.model.attention import causal_attention

    dtype = getattr(torch, dtype_name)
    B, H, Hkv, T, D = batch_size, n_heads, n_kv_heads, seq_len, head_dim
    q = torch.randn(B, H, T, D, dtype=dtype, requires_grad=True)
    k = torch.randn(B, Hkv, T, D, dtype=dtype, requires_grad=True)
    v = torch.randn(B, Hkv, T, D, dtype=dtype, requires_grad=True)
    times: dict[str, list[float]] = {"sdpa": [], "explicit": []}
    for r in range(reps + 1):
        for kernel in times:
            t = time.perf_counter()
            causal_attention(kernel, q, k, v).sum().backward()
            if r:  # the first round warms both kernels up
                times[kernel].append((time.perf_counter() - t) * 1000)
    return {**{k: round(statistics.median(v), 3) for k, v in times.items()}, "batch": B, "threads": _threads()}


def attention_probe(n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int, dtype_name: str,
                    measure: bool = True, announce=None) -> dict | None:
    return cached_measurement(attention_key(n_heads, n_kv_heads, seq_len, head_dim, dtype_name),
                              lambda: measure_attention(n_heads, n_kv_heads, seq_len, head_dim, dtype_name), measure,
                              announce)


def attention_key(n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int, dtype_name: str) -> str:
    return f"attention {n_heads}/{n_kv_heads}x{head_dim} T{seq_len} {dtype_name}"


def attention_choice(probe: dict | None, batch_size: int, n_heads: int, seq_len: int, n_layers: int,
                     dtype_bytes: int) -> tuple[str, str]:
    """(kernel, reason) for training: the explicit kernel where it measured faster and its saved
    probabilities fit ``EXPLICIT_ATTENTION_MAX_BYTES``, else SDPA."""
    if not probe:
        return "sdpa", "not measured"
    sd, ex = probe["sdpa"], probe["explicit"]
    facts = f"measured fwd+bwd: sdpa {sd:.2f} ms, explicit {ex:.2f} ms"
    if sd < ex * KERNEL_MIN_GAIN:
        return "sdpa", facts
    need = explicit_attention_bytes(batch_size, n_heads, seq_len, n_layers, dtype_bytes)
    if need > EXPLICIT_ATTENTION_MAX_BYTES:
        return "sdpa", f"{facts}, but explicit would keep {need / 2**20:,.0f} MiB of attention probabilities"
    return "explicit", facts
