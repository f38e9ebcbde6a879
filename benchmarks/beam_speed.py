"""Decoding speed of beam search beside greedy decoding, on this CPU.

    python benchmarks/beam_speed.py [--preset stories15M] [--tokens 64] [--rounds 3]

Builds the preset's model (random weights: speed does not depend on them), then times greedy
decoding (``token_loop``, temperature 0, KV cache) and beam search with 1, 4 and 8 beams
(``beam_search``, all beams in one forward per step) for the same number of new tokens after a
one-token prompt, in fp32 on one thread per core. Prints new tokens per second (the median of
``--rounds``) and each one's ratio to greedy. EOS is off, so every run makes exactly ``--tokens``.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import torch

    from workbench.config.schema import load_config
    from workbench.generation.beam import BeamSearch, beam_search
    from workbench.generation.generate import token_loop
    from workbench.generation.sampling import SamplingParams
    from workbench.model import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="stories15M")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(args.preset).model
    model = build_model(cfg, seed=0).eval()
    prompt = [1]

    def greedy():
        for _ in token_loop(model, prompt, SamplingParams(max_tokens=args.tokens, temperature=0, stop_at_eos=False,
                                                          alternatives=0)):
            pass

    def beams(w):
        return lambda: beam_search(model, prompt, BeamSearch(beams=w, max_tokens=args.tokens, stop_at_eos=False))

    tasks = {"greedy": greedy, "beams 1": beams(1), "beams 4": beams(4), "beams 8": beams(8)}
    times: dict[str, list[float]] = {k: [] for k in tasks}
    greedy()  # warm up
    for _ in range(args.rounds):  # interleaved, so a busy moment hits every task alike
        for name, fn in tasks.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"{args.preset}: dim {cfg.dim}, {cfg.n_layers} layers, vocab {cfg.vocab_size}; {args.tokens} new tokens, "
          f"{torch.get_num_threads()} threads, median of {args.rounds}")
    base = args.tokens / statistics.median(times["greedy"])
    for name, ts in times.items():
        tok_s = args.tokens / statistics.median(ts)
        print(f"  {name:8} {tok_s:8.1f} tok/s  {tok_s / base:5.2f}x greedy")


if __name__ == "__main__":
    main()
