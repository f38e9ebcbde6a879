"""Fit the planner's rule to measured sweeps and write it where the planner reads it.

    .venv/bin/python benchmarks/fit_planner.py WORKSPACE SWEEP [SWEEP ...] --recipe recipe.json

reads ``WORKSPACE/sweeps/<SWEEP>/results.json`` (``workbench sweep ... --full-eval``), takes
every finished run's non-embedding parameters N, tokens trained D and bits per byte on the whole
validation split, and fits (to the runs of one schedule, ``--fit-schedule``; the others are
listed beside the fit as recipe comparisons) ``bpb = E + A / N^alpha + B / D^beta`` (a grid over alpha and beta,
non-negative least squares for E, A, B). Writes ``workbench/planning/planner_law.json`` (the rule, the
recipe the sweeps chose, the points) and prints a markdown table of the points with the fit's
prediction for ``benchmarks/PLANNER.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.config.schema import load_config  # noqa: E402
from workbench.planning.planner import LAW_FILE, body_params  # noqa: E402


def points(ws: Path, sweeps: list[str]) -> list[dict]:
    out = []
    for name in sweeps:
        res = json.loads((ws / "sweeps" / name / "results.json").read_text())
        for r in res["rows"]:
            if r.get("status") != "finished" or not r.get("full_eval"):
                continue
            cfg = load_config(ws / "sweeps" / name / f"{r['name']}.yaml")
            out.append({"sweep": name, "run": r["name"], "dim": cfg.model.dim, "n_layers": cfg.model.n_layers,
                        "N": body_params(cfg.model), "params": cfg.model.n_params, "D": r["tokens"],
                        "bpb": r["bpb"], "lr": cfg.train.lr, "minutes": cfg.train.max_minutes,
                        "schedule": cfg.train.schedule, "optimizer": cfg.train.optimizer})
    return out


def _nnls(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    best = (None, float("inf"))
    k = X.shape[1]
    for mask in itertools.product([0, 1], repeat=k):
        cols = [i for i in range(k) if mask[i]]
        if not cols:
            continue
        coef, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
        if (coef < 0).any():
            continue
        full = np.zeros(k)
        full[cols] = coef
        err = float(((X @ full - y) ** 2).sum())
        if err < best[1]:
            best = (full, err)
    return best


def fit(pts: list[dict]) -> dict:
    N = np.array([p["N"] for p in pts], float)
    D = np.array([p["D"] for p in pts], float)
    y = np.array([p["bpb"] for p in pts], float)
    best = None
    for alpha in np.arange(0.05, 1.01, 0.025):
        for beta in np.arange(0.05, 1.01, 0.025):
            X = np.stack([np.ones_like(N), N ** -alpha, D ** -beta], axis=1)
            coef, err = _nnls(X, y)
            if coef is not None and (best is None or err < best[0]):
                best = (err, alpha, beta, coef)
    err, alpha, beta, (E, A, B) = best
    return {"E": float(E), "A": float(A), "alpha": float(alpha), "B": float(B), "beta": float(beta),
            "rmse": float(np.sqrt(err / len(pts)))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace")
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--recipe", required=True, help="a JSON file: {model: {...}, train: {...}} the sweeps chose")
    ap.add_argument("--source", default="benchmarks/PLANNER.md")
    ap.add_argument("--extra", default=None, help="a JSON file of keys to add (best_vocab, vocab_note, ...)")
    ap.add_argument("--fit-schedule", default="cosine", help="fit only the runs trained with this schedule")
    args = ap.parse_args()
    every = points(Path(args.workspace), args.sweeps)
    pts = [p for p in every if p["schedule"] == args.fit_schedule and p["optimizer"] == "adamw"]
    if len(pts) < 5:
        print(f"only {len(pts)} finished, fully evaluated runs: too few to fit", file=sys.stderr)
        return 1
    law = fit(pts)
    law["recipe"] = json.loads(Path(args.recipe).read_text())
    law["source"] = args.source
    law["points"] = pts
    if args.extra:
        law.update(json.loads(Path(args.extra).read_text()))
    LAW_FILE.write_text(json.dumps(law, indent=2) + "\n")
    print(f"bpb = {law['E']:.4f} + {law['A']:.4g} / N^{law['alpha']:.3f} + {law['B']:.4g} / D^{law['beta']:.3f}"
          f"   (rmse {law['rmse']:.4f} over {len(pts)} runs)\n")
    print("| run | dim | layers | N (non-embedding) | tokens | lr | schedule | bits/byte | fit |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for p in sorted(every, key=lambda p: (p["N"], p["D"], p["schedule"])):
        pred = law["E"] + law["A"] / p["N"] ** law["alpha"] + law["B"] / p["D"] ** law["beta"]
        fitted = p in pts
        print(f"| {p['run']} | {p['dim']} | {p['n_layers']} | {p['N']:,} | {p['D']:,} | {p['lr']:g} | "
              f"{p['schedule']}{'' if fitted else ' (not fitted)'} | {p['bpb']:.4f} | {pred:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
