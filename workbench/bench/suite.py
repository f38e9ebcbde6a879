"""``workbench bench``: the whole suite in one run, each task in its own child process.

The parent takes a bounded slice of the data source into a temporary workspace (so every task
reads the same local text, whatever the source), then runs the tasks one after another, each in
a fresh process (its peak RSS is that process's), collects their raw measurements and turns
them into rows (``report.py``). A task that fails is reported as failed and the rest still run;
a peer that is not installed is reported as missing.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from workbench.errors import WorkbenchError
from workbench.bench.runner import run_task

TASK_NAMES = ["matmul", "tokenizer", "vocab-sweep", "prepare", "prepare-rss", "train", "memory-estimate", "peers",
              "parity", "compile", "generate", "app"]
# asked for by name only: the budget figure trains for minutes (``anchor.py``)
OPT_IN_TASKS = ["anchor"]
ALL_TASKS = TASK_NAMES + OPT_IN_TASKS
PRESETS = ["debug", "stories260K", "stories15M"]
TOKENIZER = "bench"
SAMPLE_ENV = "WORKBENCH_TINYSTORIES"
HUB_DEFAULT = "roneneldan/TinyStories"
EOT = "<|endoftext|>"

# Steps per training repetition (the first ``warmup`` of them are not counted).
TRAIN_STEPS = {"quick": {"debug": 24, "stories260K": 4, "stories15M": 4},
               "full": {"debug": 100, "stories260K": 25, "stories15M": 15}}
APP_STEPS = {"quick": 320, "full": 1200}
# The reference trainers beside ours (``peers.py``): steps per repetition at each shape, the
# steps of the whole-process memory figure (dim 128), and the fp32-vs-auto parity run.
PEER_STEPS = {"quick": 3, "full": 8}
MEMORY_STEPS = {"quick": 3, "full": 30}
PARITY = {"quick": {"steps": 20, "eval_batches": 4}, "full": {"steps": 1000, "eval_batches": 50}}
# The checks across sizes (``sizes.py``): the vocab sizes of the bytes-per-token sweep, and how
# many times the text is repeated for prepare's peak RSS. (The memory estimate is checked at
# every preset, or with --quick at the smallest: each measurement is a fresh process.)
VOCAB_SWEEP = [512, 1024, 2048, 4096, 8192]
PREPARE_SCALE = 4


@dataclass
class BenchOptions:
    data: str | None = None  # default: $WORKBENCH_TINYSTORIES when it holds train.txt, else the hub
    quick: bool = False
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    presets: list[str] = field(default_factory=lambda: list(PRESETS))
    reps: int = 3
    text_mb: float | None = None  # training text taken from the source (default 4 quick, 48 full)
    vocab: int = 4096
    keep: str | None = None  # keep the bench workspace here instead of a temporary folder
    anchor_minutes: list[float] = field(default_factory=lambda: [10.0])
    anchor_seeds: int = 1

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def validate(self) -> "BenchOptions":
        bad = [t for t in self.tasks if t not in ALL_TASKS]
        if bad or not self.tasks:
            raise WorkbenchError(f"--tasks {','.join(self.tasks)!r}: unknown task {', '.join(bad) or '(none given)'}; "
                                 f"allowed: {', '.join(ALL_TASKS)}")
        if not self.anchor_minutes or any(not 0 < m <= 600 for m in self.anchor_minutes):
            raise WorkbenchError(f"--anchor-minutes {self.anchor_minutes!r}: each budget must be > 0 and <= 600")
        if not 1 <= self.anchor_seeds <= 10:
            raise WorkbenchError(f"--anchor-seeds {self.anchor_seeds!r}: 1 to 10")
        from workbench.config.schema import preset_names

        known = preset_names()
        bad = [p for p in self.presets if p not in known]
        if bad or not self.presets:
            raise WorkbenchError(f"--presets {','.join(self.presets)!r}: unknown preset "
                                 f"{', '.join(bad) or '(none given)'}; allowed: {', '.join(known)}")
        if not isinstance(self.reps, int) or not 3 <= self.reps <= 100:
            raise WorkbenchError(f"--reps {self.reps!r} is out of range: allowed 3 to 100 (medians need at least 3)")
        from workbench.tokenizer.tokenizer import TokenizerSettings

        try:
            TokenizerSettings(vocab_size=self.vocab).validate()
        except WorkbenchError as e:
            raise WorkbenchError(f"--vocab: {e}") from None
        if self.text_mb is not None and not 0.05 <= self.text_mb <= 4096:
            raise WorkbenchError(f"--text-mb {self.text_mb!r} is out of range: allowed 0.05 to 4096")
        return self

    @property
    def text_mb_or_default(self) -> float:
        return self.text_mb if self.text_mb is not None else (4.0 if self.quick else 48.0)


def default_data() -> str:
    sample = os.environ.get(SAMPLE_ENV)
    if sample and (Path(sample) / "train.txt").is_file():
        return sample
    return HUB_DEFAULT


def materialize(source_spec: str, out: Path, train_mb: float, progress: Callable[[str], None]) -> dict:
    """Write up to ``train_mb`` MB of the source's training documents to ``out/train.txt`` and up
    to a quarter of that of its validation documents to ``out/valid.txt`` (TinyStories format)."""
    from workbench import fileio
    from workbench.data.sources import resolve_source

    src = resolve_source(source_spec)
    out.mkdir(parents=True, exist_ok=True)
    info = {"source": src.describe()}
    for split, fname, cap in (("train", "train.txt", train_mb), ("validation", "valid.txt", max(train_mb / 4, 0.02))):
        limit, n, docs = cap * 1e6, 0, []
        for doc in src.documents(split):
            docs.append(doc)
            n += len(doc.encode("utf-8"))
            if n >= limit:
                break
        if not docs:
            raise WorkbenchError(f"the {split} split of {src.describe()} has no documents to benchmark on")
        fileio.write_text(out / fname, "".join(f"{d}\n{EOT}\n" for d in docs))
        info[fname] = {"documents": len(docs), "MB": round(n / 1e6, 3)}
        progress(f"{fname}: {len(docs):,} documents, {n / 1e6:.1f} MB")
    return info


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gb"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    info.setdefault("cpu", platform.processor() or platform.machine())
    from workbench.machine.probe import cpu_has_native_bf16

    info["native_bf16_flag"] = cpu_has_native_bf16()
    return info


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def run_bench(opts: BenchOptions, say: Callable[[str], None] = print,
              cancel_event: threading.Event | None = None) -> dict:
    """Run the suite; returns the raw results (``report.build_rows`` makes the rows)."""
    opts.validate()
    data = opts.data or default_data()
    started = time.time()
    t0 = time.perf_counter()
    root = Path(opts.keep).resolve() if opts.keep else Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    res: dict = {"version": 1, "mode": opts.mode, "options": asdict(opts), "data": data,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                 "machine": machine_info(), "tasks": {}}
    try:
        ws_root = root / "workspace"
        text_dir = root / "text"
        say(f"bench ({opts.mode}): taking up to {opts.text_mb_or_default:g} MB of text from {data}")
        res["text"] = materialize(data, text_dir, opts.text_mb_or_default, lambda m: say(f"  {m}"))
        train_mb = res["text"]["train.txt"]["MB"]
        base = {"workspace": str(ws_root), "reps": opts.reps, "vocab": opts.vocab, "tokenizer": TOKENIZER,
                "name": TOKENIZER, "text_dir": str(text_dir), "train_txt": str(text_dir / "train.txt"),
                "valid_txt": str(text_dir / "valid.txt"), "sample_mb": min(train_mb + 1, 4096)}
        plan = plan_tasks(opts)
        needs_tok = any(t in opts.tasks for t in ("prepare", "prepare-rss", "train", "peers", "parity", "compile", "app",
                                                  "anchor"))
        if needs_tok and "tokenizer" not in opts.tasks:
            say(f"  building the {opts.vocab}-piece tokenizer the other tasks use (not timed)")
            from workbench.tokenizer.tokenizer import TokenizerSettings
            from workbench.tokenizer.build import build_tokenizer
            from workbench.workspace import Workspace

            build_tokenizer(Workspace.at(ws_root), TOKENIZER,
                            TokenizerSettings(vocab_size=opts.vocab, data=base["train_txt"], sample_mb=base["sample_mb"]),
                            overwrite=True, cancel_event=cancel_event)
        tmp = root / "ipc"
        loads = res["machine"]["load"] = [load_average()]
        for i, (key, module, task, extra) in enumerate(plan, 1):
            loads.append(load_average())  # between tasks: what else runs here shows
            say(f"[{i}/{len(plan)}] {key}")
            child = run_task(module, task, {**base, **extra}, tmp, echo=say, cancel_event=cancel_event)
            entry = {**child.result, "process_peak_rss_mb": child.peak_rss_mb, "seconds": round(child.seconds, 2)}
            if child.returncode != 0:
                say(f"  {key} failed: {child.result.get('error')}")
            if task == "prepare":
                res["tasks"].setdefault("prepare", {"runs": []})["runs"].append(entry)
            else:
                res["tasks"][key] = entry
    finally:
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def plan_tasks(opts: BenchOptions) -> list[tuple[str, str, str, dict]]:
    """(result key, module, task, extra arguments) for each child process, in order."""
    engine, sizes = "workbench.bench.tasks", "workbench.bench.sizes"
    steps = TRAIN_STEPS[opts.mode]
    plan: list[tuple[str, str, str, dict]] = []
    for task in ALL_TASKS:
        if task not in opts.tasks:
            continue
        if task == "matmul":
            plan.append(("matmul", engine, "matmul", {"seconds": 0.3 if opts.quick else 1.0}))
        elif task == "tokenizer":
            plan.append(("tokenizer", engine, "tokenizer", {}))
        elif task == "vocab-sweep":
            plan.append(("vocab-sweep", sizes, "vocab-sweep", {"vocabs": VOCAB_SWEEP}))
        elif task == "prepare":
            plan += [(f"prepare {r + 1}/{opts.reps}", engine, "prepare", {"rep": r}) for r in range(opts.reps)]
        elif task == "prepare-rss":
            plan.append(("prepare-rss", sizes, "prepare-rss", {"scale": PREPARE_SCALE}))
        elif task == "memory-estimate":
            from workbench.config.schema import load_config
            from workbench.config.sizes import param_count

            presets = opts.presets
            if opts.quick:
                presets = [min(presets, key=lambda p: param_count(load_config(p).model))]
            plan.append(("memory-estimate", sizes, "memory-estimate", {"presets": presets}))
        elif task == "train":
            for p in opts.presets:
                n = steps.get(p, steps["stories15M"])
                plan.append((f"train {p}", engine, "train",
                             {"preset": p, "steps": n, "warmup": 1 if opts.quick else 2, "bf16": not opts.quick}))
        elif task == "peers":
            from workbench.bench.peers import SHAPES

            for shape in SHAPES:
                plan.append((f"peers {shape}", "workbench.bench.peers", "peers",
                             {"shape": shape, "steps": PEER_STEPS[opts.mode], "warmup": 1,
                              "memory": shape == "d128", "memory_steps": MEMORY_STEPS[opts.mode]}))
        elif task == "compile":
            if opts.quick:  # a cold compile takes 30 s and more on 2 cores: the full suite only
                continue
            for shape in ("d64", "d128", "d288"):
                plan.append((f"compile {shape}", "workbench.bench.peers", "compile",
                             {"shape": shape, "steps": 12, "warmup": 3}))
        elif task == "parity":
            plan.append(("parity", "workbench.bench.peers", "parity", {"shape": "d128", **PARITY[opts.mode]}))
        elif task == "generate":
            for p in opts.presets:
                plan.append((f"generate {p}", engine, "generate",
                             {"preset": p, "prompt_len": 32, "new_tokens": 48 if opts.quick else 128,
                              "reps": opts.reps if opts.quick else max(opts.reps, 5)}))
        elif task == "anchor":
            plan.append(("anchor", "workbench.bench.anchor", "anchor",
                         {"minutes": opts.anchor_minutes, "seeds": opts.anchor_seeds}))
        elif task == "app":
            plan.append(("app", "workbench.bench.app_task", "app", {"preset": "debug", "steps": APP_STEPS[opts.mode]}))
    return plan

