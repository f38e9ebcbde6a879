"""Mutation check: does the suite notice when the engine's maths is broken on purpose?

    .venv/bin/python tests/mutations.py              # every mutation
    .venv/bin/python tests/mutations.py --only NAME  # one (repeatable), --list to see names

For each mutation (name, file, exact old snippet, new snippet, test node ids) it copies
``workbench/``, ``tests/`` and ``pyproject.toml`` to a temporary folder, replaces the snippet
(which must occur exactly once, else the script stops: the engine moved on and the list must
follow it), and runs the named tests there with this venv's python, the copy first on
``PYTHONPATH``. The test process first imports the mutated module and checks that it is the
copy's, and that it holds the new snippet, so a run can never test the real tree by mistake.
A mutation is *caught* when the tests fail (pytest exit status 1), *survived* when they pass;
anything else (a collection error, the wrong module imported) is an error. A baseline run of
every named test on the unmutated copy comes first (skip with --no-baseline).

Exit status 0 only when the baseline passes and every mutation is caught. Not a test module:
pytest collects ``test_*.py`` only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ORACLES = "tests/test_oracles.py"
IMPORTS = "tests/test_import.py"


def o(name: str) -> str:
    return f"{ORACLES}::{name}"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutation
MUTATIONS = [
    # --- the eleven of issue 26 -------------------------------------------------------------
    M("bpb_per_token", "workbench/data/tokens.py",
      'return s["bytes"] / max(1, s["tokens"])', "return 1.0",
      (o("test_bits_per_byte_on_hand_made_text_and_known_probabilities"),
       o("test_evaluation_reads_only_the_validation_tokens_with_dropout_off"))),
    M("accumulation_not_divided", "workbench/training/trainer.py",
      "loss = self.model(x, targets=y) / accum", "loss = self.model(x, targets=y)",
      (o("test_accumulated_micro_batches_give_the_gradient_of_one_big_batch"),)),
    M("eval_on_train_split", "workbench/training/trainer.py",
      "m = evaluate(self.raw_model, self.data.val,", "m = evaluate(self.raw_model, self.data.train,",
      (o("test_evaluation_reads_only_the_validation_tokens_with_dropout_off"),)),
    M("weight_decay_on_norms_and_biases", "workbench/training/optim.py",
      "(decay if p.dim() >= 2 else no_decay).append(p)", "decay.append(p)",
      (o("test_weight_decay_touches_exactly_the_matrices"),
       o("test_accumulated_micro_batches_give_the_gradient_of_one_big_batch"))),
    M("temperature_ignored", "workbench/generation/sampling.py",
      "filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)",
      "filter_top_k_top_p(logits, params.top_k, params.top_p)",
      (o("test_temperature_samples_softmax_of_logits_over_t"),)),
    M("cosine_inverted", "workbench/training/optim.py",
      "(1 + math.cos(math.pi * p))", "(1 - math.cos(math.pi * p))",
      (o("test_lr_at_equals_the_formula"), o("test_the_trainer_follows_the_schedule_step_by_step"))),
    M("top_p_extra_token_at_exactly_p", "workbench/generation/sampling.py",
      "int((mass_before < top_p).sum())", "int((mass_before <= top_p).sum())",
      (o("test_top_p_at_exactly_p"),)),
    M("clipping_ignored", "workbench/training/trainer.py",
      'clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else float("inf"))',
      'clip_grad_norm_(params, float("inf"))',
      (o("test_clipping_bounds_the_global_norm_and_leaves_a_small_one_unchanged"),)),
    M("token_budget_twice", "workbench/training/trainer.py",
      "            fr.append(self.tokens / tc.max_tokens)\n"
      "        if tc.max_minutes:\n"
      "            fr.append(self.elapsed / (tc.max_minutes * 60))\n"
      "        return min(1.0, max(fr))",
      "            fr.append(self.tokens / (2 * tc.max_tokens))\n"
      "        if tc.max_minutes:\n"
      "            fr.append(self.elapsed / (tc.max_minutes * 60))\n"
      "        return min(1.0, max(fr))",
      (o("test_a_token_budget_ends_at_that_many_tokens"),)),
    M("rope_applied_to_v", "workbench/model/attention.py",
      "q, k = self.rotate(self.qk_norm(qk), rope).split((H, Hkv), dim=2)\n",
      "q, k = self.rotate(self.qk_norm(qk), rope).split((H, Hkv), dim=2)\n        v = self.rotate(v, rope)\n",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("generation_ignores_eos", "workbench/generation/generate.py",
      "if tok == self.eos_id and p.stop_at_eos:", "if False and tok == self.eos_id and p.stop_at_eos:",
      (o("test_generation_stops_at_eos"),)),
    # --- more of the same kind ------------------------------------------------------------------
    M("warmup_off_by_one", "workbench/training/optim.py",
      "return tc.lr * (step + 1) / tc.warmup_steps", "return tc.lr * step / tc.warmup_steps",
      (o("test_lr_at_equals_the_formula"), o("test_the_trainer_follows_the_schedule_step_by_step"))),
    M("linear_schedule_rises", "workbench/training/optim.py",
      "return tc.lr + (tc.min_lr - tc.lr) * p", "return tc.min_lr + (tc.lr - tc.min_lr) * p",
      (o("test_lr_at_equals_the_formula"),)),
    M("wsd_decays_over_the_wrong_span", "workbench/training/optim.py",
      "(p - start) / tc.decay_fraction", "(p - start)",
      (o("test_lr_at_equals_the_formula"), o("test_a_token_budget_decays_on_the_tokens_seen"))),
    M("schedule_progress_ignores_warmup", "workbench/training/trainer.py",
      "fr.append((self.step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps))",
      "fr.append(self.step / max(1, tc.max_steps))",
      (o("test_the_trainer_follows_the_schedule_step_by_step"),)),
    M("time_budget_not_in_schedule", "workbench/training/trainer.py",
      "            fr.append(self.elapsed / (tc.max_minutes * 60))\n        return max(fr)\n",
      "            pass\n        return max(fr)\n",
      (o("test_a_time_budget_decays_on_the_clock"),)),
    M("loss_gradient_sign", "workbench/model/loss.py",
      "p.scatter_add_(1, t, -valid[:, None])", "p.scatter_add_(1, t, valid[:, None])",
      (o("test_accumulated_micro_batches_give_the_gradient_of_one_big_batch"),
       o("test_a_model_learns_a_tiny_synthetic_language"))),
    M("loss_value_sign", "workbench/model/loss.py",
      "loss += ((lse - logits.gather(1, t)[:, 0]) * valid).sum()",
      "loss += ((logits.gather(1, t)[:, 0] - lse) * valid).sum()",
      (o("test_accumulated_micro_batches_give_the_gradient_of_one_big_batch"),)),
    M("kv_cache_position_offset", "workbench/model/transformer.py",
      "rope = self.pos.rotary(start, T)", "rope = self.pos.rotary(0, T)",
      (o("test_kv_cache_decoding_equals_the_reference"),)),
    M("learned_positions_ignore_cache_offset", "workbench/model/transformer.py",
      "x = self.drop(self.pos(self.tok_emb(idx), start))", "x = self.drop(self.pos(self.tok_emb(idx), 0))",
      (o("test_kv_cache_decoding_equals_the_reference"),)),
    M("top_k_keeps_k_plus_one", "workbench/generation/sampling.py",
      "keep = top_k if k_on else V", "keep = top_k + 1 if k_on else V",
      (o("test_top_k_keeps_exactly_k_and_renormalises"),)),
    M("repetition_penalty_direction", "workbench/generation/sampling.py",
      "torch.where(logits > 0, logits / penalty, logits * penalty)",
      "torch.where(logits > 0, logits * penalty, logits / penalty)",
      (o("test_repetition_penalty_makes_seen_tokens_less_likely"),)),
    M("perplexity_not_exp_of_mean", "workbench/training/evaluate.py",
      '"val_ppl": math.exp(min(loss, 700.0)),', '"val_ppl": 2.0 ** min(loss, 700.0),',
      (o("test_bits_per_byte_on_hand_made_text_and_known_probabilities"),)),
    M("dropout_left_on_in_eval", "workbench/training/evaluate.py",
      "    model.eval()\n    total_loss = 0.0", "    model.train()\n    total_loss = 0.0",
      (o("test_evaluation_reads_only_the_validation_tokens_with_dropout_off"),)),
    M("eval_windows_misaligned", "workbench/data/tokens.py",
      "yield self.read_windows([r * T for r in rows], T + 1)", "yield self.read_windows([r * (T + 1) for r in rows], T + 1)",
      (o("test_bits_per_byte_on_hand_made_text_and_known_probabilities"),)),
    M("causal_mask_off_sdpa", "workbench/model/attention.py",
      "is_causal=mask is None and T > 1", "is_causal=False",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("causal_mask_off_explicit", "workbench/model/attention.py",
      'torch.full((T, S), float("-inf"), dtype=dtype, device=device).triu(S - T + 1)',
      'torch.full((T, S), float("-inf"), dtype=dtype, device=device).triu(S)',
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("attention_scale_1_over_d", "workbench/model/attention.py",
      "alpha=1.0 / math.sqrt(D))", "alpha=1.0 / D)",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("gqa_heads_grouped_wrongly", "workbench/model/attention.py",
      "            k = k.repeat_interleave(H // k.shape[1], dim=1)\n"
      "            v = v.repeat_interleave(H // v.shape[1], dim=1)\n",
      "            k = k.repeat(1, H // k.shape[1], 1, 1)\n"
      "            v = v.repeat(1, H // v.shape[1], 1, 1)\n",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("rope_rotates_backwards", "workbench/model/positions.py",
      "torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)",
      "torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("softcap_scale_lost", "workbench/model/transformer.py",
      "logits = cap * torch.tanh(logits / cap)", "logits = torch.tanh(logits / cap)",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("tied_embeddings_untied", "workbench/model/transformer.py",
      "        if cfg.tie_embeddings:\n            self.lm_head.weight = self.tok_emb.weight",
      "        if False:\n            self.lm_head.weight = self.tok_emb.weight",
      (o("test_logits_equal_a_plain_reference_implementation"),)),
    M("byte_count_is_characters", "workbench/data/prepare.py",
      'sum(len(d.encode("utf-8")) for d in docs)', "sum(len(d) for d in docs)",
      (o("test_bits_per_byte_on_hand_made_text_and_known_probabilities"),)),
    M("muon_takes_embedding_and_head", "workbench/training/optim.py",
      'if tc.optimizer == "muon" and p.dim() == 2 and id(p) not in head:',
      'if tc.optimizer == "muon" and p.dim() == 2:',
      (o("test_muon_takes_exactly_the_hidden_matrices"),)),
    # --- import (issue 28): the inverse of each export must be exact -----------------------------
    M("import_skips_qk_deinterleave", "workbench/export/layout.py",
      'w = deinterleave_heads(w, cfg.n_heads if role == "q" else cfg.kv_heads)', "pass",
      (f"{IMPORTS}::test_every_export_imports_back_with_the_same_logits_and_greedy_text",
       f"{IMPORTS}::test_a_llama2c_model_bin_imports_with_llama2cs_own_logits")),
    M("import_hf_rope_theta_ignored", "workbench/export/hf.py",
      "rope_theta=float(10000.0 if theta is None else theta)", "rope_theta=10000.0",
      (f"{IMPORTS}::test_a_transformers_llama_folder_imports_with_its_own_logits",)),
    M("llama2c_v1_norms_swapped", "workbench/export/llama2c.py",
      'order = [*each("attn_norm", "mlp_norm"), ("norm", None)', 'order = [*each("mlp_norm", "attn_norm"), ("norm", None)',
      (f"{IMPORTS}::test_a_llama2c_model_bin_imports_with_llama2cs_own_logits",)),
    M("gguf_vocab_space_prefix_lost", "workbench/export/gguf_vocab.py",
      "n.add_dummy_prefix = v.add_space_prefix", "n.add_dummy_prefix = False",
      (f"{IMPORTS}::test_a_llama_style_tokenizer_round_trips_through_gguf_and_trains",)),
    M("gguf_vocab_check_skipped", "workbench/export/gguf_vocab.py",
      "    for text in samples(v):\n", "    for text in []:\n",
      (f"{IMPORTS}::test_a_gguf_vocabulary_sentencepiece_cannot_hold_is_refused",)),
    M("import_vocab_mismatch_let_through", "workbench/export/importer.py",
      "if tok.vocab_size != V:", "if False:",
      (f"{IMPORTS}::test_a_vocab_mismatch_between_weights_and_tokenizer_is_refused",)),
]


def module_of(file: str) -> str:
    return file[:-3].replace("/", ".")


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    for part in ("workbench", "tests"):
        shutil.copytree(REPO / part, dest / part, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")


def apply(dest: Path, m: Mutation) -> None:
    path = dest / m.file
    text = path.read_text(encoding="utf-8")
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"mutation {m.name}: the old snippet occurs {n} times in {m.file} (expected exactly once):\n"
                         f"{m.old}")
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")


# Run inside the copy: import the mutated module, prove it is the copy's, then run pytest in
# the same process (so the tests see exactly that module).
RUNNER = """
import importlib, os, sys
root, module, needle = sys.argv[1], sys.argv[2], sys.argv[3]
mod = importlib.import_module(module)
where = os.path.realpath(mod.__file__)
if not where.startswith(os.path.realpath(root) + os.sep):
    print(f"MUTANT-CHECK: {module} was imported from {where}, not from the copy {root}")
    sys.exit(97)
if needle and needle not in open(where, encoding="utf-8").read():
    print(f"MUTANT-CHECK: {where} does not hold the mutated text")
    sys.exit(98)
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[4:]]))
"""


def run_tests(root: Path, module: str, needle: str, tests, timeout: float) -> tuple[int, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("WORKBENCH_TINYSTORIES", str(REPO.parent / "shared" / "data" / "tinystories"))
    env.setdefault("WORKBENCH_PEERS", str(REPO.parent / "shared" / "peers"))  # the copy has no ../shared
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-c", RUNNER, str(root), module, needle, *tests], cwd=root, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = -1, (e.stdout or "") if isinstance(e.stdout, str) else ""
    return rc, out, time.monotonic() - t0


def tail(out: str, n: int = 12) -> str:
    return "\n".join("    " + line for line in out.strip().splitlines()[-n:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutations and their tests")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated baseline run")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    ap.add_argument("-v", "--verbose", action="store_true", help="show each test run's output tail")
    args = ap.parse_args(argv)
    names = [m.name for m in MUTATIONS]
    assert len(set(names)) == len(names), "duplicate mutation names"
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:40s} {m.file}  ->  {', '.join(t.split('::')[-1] for t in m.tests)}")
        return 0
    chosen = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f"unknown mutation(s): {', '.join(unknown)}; --list shows them", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.name in args.only]
    t_start = time.monotonic()
    ok = True
    if not args.no_baseline:
        tests = sorted({t for m in chosen for t in m.tests})
        with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
            root = Path(tmp)
            copy_tree(root)
            rc, out, secs = run_tests(root, "workbench", "", tests, args.timeout * 2)
        print(f"baseline (no mutation): {'passes' if rc == 0 else 'FAILS'} ({secs:.0f} s, {len(tests)} tests)")
        if rc != 0:
            print(tail(out, 30))
            return 1
    results = []
    for m in chosen:
        with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
            root = Path(tmp)
            copy_tree(root)
            apply(root, m)
            old_lines = m.old.splitlines()
            needle = next((line.strip() for line in m.new.splitlines() if line.strip() and line not in old_lines),
                          m.new.strip())
            rc, out, secs = run_tests(root, module_of(m.file), needle, m.tests, args.timeout)
        if rc == 1:
            failed = [line.split(" ")[1] for line in out.splitlines() if line.startswith("FAILED ")]
            state, by = "caught", (failed[0].split("::", 1)[-1] if failed else "?")
        elif rc == 0:
            state, by = "SURVIVED", ""
        else:
            state, by = "ERROR", f"exit status {rc}"
        ok &= state == "caught"
        results.append((m, state, by, secs))
        print(f"{m.name:40s} {state:8s} {secs:5.1f} s  {by}", flush=True)
        if args.verbose or state != "caught":
            print(tail(out))
    caught = sum(s == "caught" for _, s, _, _ in results)
    print(f"\n{caught} of {len(results)} mutations caught, "
          f"{sum(s == 'SURVIVED' for _, s, _, _ in results)} survived, "
          f"{sum(s == 'ERROR' for _, s, _, _ in results)} errors, in {time.monotonic() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
