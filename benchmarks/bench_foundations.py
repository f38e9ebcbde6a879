"""Benchmarks for the foundations (issue 2), side by side with the peers, in one run.

  .venv/bin/python benchmarks/bench_foundations.py [--data DIR] [--reps 3] [--big-mb 300] [--json OUT]

Measures on the TinyStories sample (``$WORKBENCH_TINYSTORIES``):
- tokenizer build time, vocab 4096 on train.txt: ours (whole pipeline, child process included)
  vs Hugging Face ``tokenizers`` BpeTrainer on the same text;
- prepare throughput (MB/s of text) vs sentencepiece single-thread encode of the same documents
  and vs HF ``tokenizers`` ``encode_batch``;
- bytes per token on valid.txt for vocab 512..8192;
- peak RSS of ``workbench data prepare`` on the sample repeated to ~100 MB and ~300 MB.
Each timing is the median of ``--reps`` runs (min and max shown); ratios are taken per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.data import resolve_source  # noqa: E402
from workbench.tokenizer import TokenizerSettings, load_tokenizer  # noqa: E402
from workbench.tokenizer_build import build_tokenizer  # noqa: E402
from workbench.tokens import prepare_data  # noqa: E402
from workbench.workspace import Workspace  # noqa: E402


def med(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def hf_train(files, vocab):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False)
    tok.train([str(f) for f in files], trainer)
    return tok


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a fresh process; return (seconds, peak RSS of it in MB)."""
    code = (
        "import resource, subprocess, sys, time; t=time.time(); subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL); print(time.time()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True).stdout
    secs, kb = out.split()
    return float(secs), int(kb) / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("WORKBENCH_TINYSTORIES", str(REPO.parent / "shared/data/tinystories")))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = Path(args.data)
    train, valid = data / "train.txt", data / "valid.txt"
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    ws = Workspace.at(tmp / "ws")
    res: dict = {"cores": os.cpu_count()}

    # 1. tokenizer build, vocab 4096, ours vs HF tokenizers, interleaved.
    ours, hf, ratio = [], [], []
    for r in range(args.reps):
        t = time.perf_counter()
        build_tokenizer(ws, f"b{r}", TokenizerSettings(vocab_size=4096, data=str(train)))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        hf_tok = hf_train([train], 4096)
        hf.append(time.perf_counter() - t)
        ratio.append(hf[-1] / ours[-1])
    res["build_vocab4096_s"] = {"ours": med(ours), "hf_tokenizers": med(hf), "hf_over_ours": med(ratio)}
    print("build", json.dumps(res["build_vocab4096_s"]), flush=True)

    # 2. prepare throughput vs sentencepiece single-thread and HF encode_batch on the same docs.
    tok = load_tokenizer(ws, "b0")
    src = resolve_source(str(data))
    docs = list(src.documents("train")) + list(src.documents("validation"))
    mb = sum(len(d.encode()) for d in docs) / 1e6
    ours, sp1, hfb, r_sp, r_hf = [], [], [], [], []
    for r in range(args.reps):
        t = time.perf_counter()
        prepare_data(ws, "b0", str(data), name=f"p{r}")
        ours.append(mb / (time.perf_counter() - t))
        t = time.perf_counter()
        tok.sp.encode(docs, add_bos=True, add_eos=True, num_threads=1)
        sp1.append(mb / (time.perf_counter() - t))
        t = time.perf_counter()
        hf_tok.encode_batch(docs)
        hfb.append(mb / (time.perf_counter() - t))
        r_sp.append(ours[-1] / sp1[-1])
        r_hf.append(ours[-1] / hfb[-1])
    res["prepare_MBps"] = {
        "text_MB": round(mb, 2), "ours": med(ours), "sentencepiece_1_thread": med(sp1),
        "hf_encode_batch": med(hfb), "ours_over_sp1": med(r_sp), "ours_over_hf": med(r_hf),
    }
    print("prepare", json.dumps(res["prepare_MBps"]), flush=True)

    # 3. bytes per token on valid.txt across vocab sizes (built on train.txt).
    bpt = {}
    vtext = [d for d in resolve_source(str(valid)).documents("train")] + list(resolve_source(str(valid)).documents("validation"))
    vbytes = sum(len(d.encode()) for d in vtext)
    for v in (512, 1024, 2048, 4096, 8192):
        build_tokenizer(ws, f"v{v}", TokenizerSettings(vocab_size=v, data=str(train)))
        t = load_tokenizer(ws, f"v{v}")
        bpt[v] = round(vbytes / sum(map(len, t.encode_batch(vtext))), 3)
    res["bytes_per_token_valid"] = bpt
    print("bytes/token", bpt, flush=True)

    # 4. peak RSS of prepare as the input grows.
    one = train.read_bytes()
    rss = {}
    for target in (100, args.big_mb):
        big = tmp / f"big{target}.txt"
        with open(big, "wb") as f:
            for _ in range(max(1, round(target * 1e6 / len(one)))):
                f.write(one)
        secs, peak = peak_rss_mb([sys.executable, "-m", "workbench", "--workspace", str(ws.root), "data", "prepare",
                                  "--tokenizer", "b0", "--data", str(big), "--name", f"big{target}"])
        rss[f"{big.stat().st_size / 1e6:.0f}MB"] = {"peak_rss_MB": round(peak, 1), "seconds": round(secs, 1),
                                                    "MBps": round(big.stat().st_size / 1e6 / secs, 2)}
        big.unlink()
        print("prepare rss", rss, flush=True)
    res["prepare_peak_rss"] = rss
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
