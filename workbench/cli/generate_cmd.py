"""``workbench generate`` (one prompt, N samples) and ``workbench chat`` (a line-by-line
conversation that streams replies; Ctrl+C stops the current reply, not the program)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from workbench.cli.common import print_json, say_note


def _sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("run")
    p.add_argument("--checkpoint", default=None, help="checkpoint name (default: latest)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="weights while decoding (default auto: bf16 where it measured faster for this "
                        "model's shape on this CPU; fp32 gives the exact greedy text)")
    p.add_argument("--max-tokens", type=int, default=max_tokens, metavar="N")
    p.add_argument("--temperature", type=float, default=None, metavar="T", help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K")
    p.add_argument("--top-p", type=float, default=None, metavar="P")
    p.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R")
    p.add_argument("--seed", type=int, default=None, metavar="S")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text appears (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-text token")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a run's model")
    _sampling_args(p, 200)
    p.add_argument("--prompt", default="", metavar="TEXT",
                   help="text to continue (default: none, so the model starts from BOS alone, "
                        "as llama2.c's run.c does without -i)")
    p.add_argument("--n", type=int, default=1, metavar="N", help="number of samples (seeds S, S+1, ...)")
    p.add_argument("--beams", type=int, default=None, metavar="W",
                   help="beam search with W beams instead of sampling: prints the W most likely continuations "
                        "with their log-probabilities, best first")
    p.add_argument("--length-penalty", type=float, default=None, metavar="A",
                   help="with --beams: rank by log-probability / length**A (default 1: the mean per token; "
                        "0: the sum, which favours short texts)")
    p.add_argument("--json", action="store_true", help="print results (with per-token probabilities) as JSON")
    p.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="talk to a run's model line by line (/quit or Ctrl+D exits)")
    _sampling_args(c, 200)
    c.set_defaults(func=cmd_chat)


def _params(args, seed):
    from workbench.generation.sampling import sampling_params

    return sampling_params(max_tokens=args.max_tokens, temperature=0.8 if args.temperature is None else args.temperature,
                           top_k=args.top_k, top_p=args.top_p,
                           repetition_penalty=args.repetition_penalty, seed=seed,
                           stop=tuple(args.stop), stop_at_eos=not args.ignore_eos)


def cmd_generate(args, ws) -> int:
    import os

    from workbench.errors import WorkbenchError
    from workbench.generation.generate import Generation, load_for_generation

    if args.n < 1:
        raise WorkbenchError(f"--n {args.n} is not allowed: expected an integer >= 1")
    if args.beams is not None:
        return _beam_search(args, ws)
    if args.length_penalty is not None:
        raise WorkbenchError("--length-penalty applies only to beam search: add --beams W")
    _params(args, args.seed)  # bad settings fail before the model loads
    model, tok, cfg, ckpt = load_for_generation(ws, args.run, args.checkpoint, args.device, args.precision, say_note)
    if not args.json:
        print(f"decoding in {_precision(model)} ({model.precision_reason})", file=sys.stderr)
    base = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    results = []
    for i in range(args.n):
        gen = Generation(model, tok, args.prompt, _params(args, base + i))
        if args.json:
            for _ in gen.steps():
                pass
        else:
            if args.n > 1:
                print(f"--- sample {i + 1} (seed {base + i})")
            sys.stdout.write(args.prompt)
            for delta in gen:
                sys.stdout.write(delta)
                sys.stdout.flush()
            sys.stdout.write("\n")
            for note in gen.result.notes:
                print(f"note: {note}", file=sys.stderr)
        results.append(gen.result)
    if args.json:
        print_json({"run": args.run, "checkpoint": ckpt, "precision": _precision(model),
                    "precision_reason": model.precision_reason, "samples": [r.to_dict() for r in results]})
    return 0


def _beam_search(args, ws) -> int:
    """``generate --beams W``: the W most likely continuations, best first."""
    from workbench.errors import WorkbenchError
    from workbench.generation.beam import BeamSearch
    from workbench.generation.generate import beam_generation, load_for_generation

    sampling = {"--temperature": args.temperature is not None, "--top-k": args.top_k is not None,
                "--top-p": args.top_p is not None, "--repetition-penalty": args.repetition_penalty != 1.0,
                "--seed": args.seed is not None, "--n": args.n != 1, "--stop": bool(args.stop)}
    clash = [flag for flag, given in sampling.items() if given]
    if clash:
        raise WorkbenchError(f"{', '.join(clash)} cannot be used with --beams: beam search does not sample "
                             "(it returns the most likely continuations); drop one or the other")
    search = BeamSearch(beams=args.beams, max_tokens=args.max_tokens,
                        length_penalty=1.0 if args.length_penalty is None else args.length_penalty,
                        stop_at_eos=not args.ignore_eos).validate()  # bad settings fail before the model loads
    model, tok, cfg, ckpt = load_for_generation(ws, args.run, args.checkpoint, args.device, args.precision, say_note)
    res = beam_generation(model, tok, args.prompt, search, score=False)
    found, seconds = res.beams, res.seconds
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json({"run": args.run, "checkpoint": ckpt, "precision": _precision(model), "beams": search.beams,
                    "length_penalty": search.length_penalty, "seconds": seconds,
                    "results": [{"text": b.text, "ids": b.ids, "logprob": b.logprob, "score": b.score,
                                 "ended": b.ended} for b in found]})
        return 0
    print(f"decoding in {_precision(model)} ({model.precision_reason}); {search.beams} beams, length penalty "
          f"{search.length_penalty:g}", file=sys.stderr)
    for i, b in enumerate(found):
        n = len(b.ids) + (b.ended == "eos")
        print(f"--- beam {i + 1}: log-prob {b.logprob:.3f} over {n} token(s) ({b.logprob / max(1, n):.3f} each), "
              f"score {b.score:.4f}, ended at {b.ended.replace('_', ' ')}")
        print(args.prompt + b.text)
    return 0


def cmd_chat(args, ws) -> int:
    from workbench.generation.generate import Generation, load_for_generation

    _params(args, args.seed)
    model, tok, cfg, ckpt = load_for_generation(ws, args.run, args.checkpoint, args.device, args.precision, say_note)
    interactive = sys.stdin.isatty()
    print(f"chatting with {args.run} @ {ckpt} in {_precision(model)} — /quit or Ctrl+D exits, /reset forgets, "
          "Ctrl+C stops a reply", file=sys.stderr)
    history = ""  # the transcript so far; the model continues it (the context keeps the end)
    turn = 0
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl+C at the prompt: not a way out, say what is
            print("\n(use /quit or Ctrl+D to leave)", file=sys.stderr)
            continue
        if not line:  # EOF
            if interactive:
                sys.stdout.write("\n")
            return 0
        line = line.rstrip("\r\n")
        if line.strip() == "/quit":
            return 0
        if line.strip() == "/reset":
            history = ""
            print("(history cleared)", file=sys.stderr)
            continue
        if not line.strip():
            continue
        history += line + "\n"
        seed = None if args.seed is None else args.seed + turn
        turn += 1
        reply, reason = _stream_reply(Generation(model, tok, history, _params(args, seed)))
        history += reply + "\n"
        if reason == "cancelled":
            print("[stopped]", file=sys.stderr)


def _precision(model) -> str:
    from workbench.generation.generate import weights_precision

    return weights_precision(model)


def _stream_reply(gen) -> tuple[str, str]:
    """Print a reply as it is generated; Ctrl+C ends the reply (not the program)."""
    stop = threading.Event()
    gen.loop.stop_event = stop
    prev = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for delta in gen:
            sys.stdout.write(delta)
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGINT, prev)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return gen.result.text, gen.result.stop_reason
