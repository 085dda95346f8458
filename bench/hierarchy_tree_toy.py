"""Strict-tree SAEs against flat TopK SAEs with their discovered forest, in bits, on toy data
with a planted strict forest (issue 14, must-show 1).

The toy: d=64, 224 features, 32 base features each the root of a planted tree (2 children, each
with 2 grandchildren; a child fires with P 0.7 while its parent does, one sibling at a time),
~3 active roots per row; exactly the regular forest of branching 2,2 that ``--arch tree`` trains,
so the width budget D=224 fits the truth. Trained on 60,000 rows, measured on 20,000 held-out
rows at ε = FVU 0.10: DL at the effective global step and at per-feature steps, conditional on
the forest (the flat SAEs' discovered one, ``parents="auto"``; the tree's own), the flat DL
beside it, and the recovery of the planted pairs (cosine 0.9 and 0.7, and whether the learned
forest puts them in place), and MMCS to the planted directions. Rows: flat TopK, BatchTopK and
Matryoshka at several k, each with its discovered forest; the tree from scratch; the tree started
from the best flat TopK SAE plus the strict part of its discovered forest or plus its
co-occurrence forest (each latent under the more frequent one active in most of its rows), and
from the Matryoshka SAE of the same k (its latents absorb less) plus the strict part of its
forest; and an *oracle* tree
started at the planted directions and forest (not a fair competitor: it shows what the
architecture can reach). Every tree twice: ``tree`` (k roots by TopK) and ``batchtree`` (a
batch-level budget of k latents per row, saved with one threshold). A figure beside the JSON (``.png``): DL at ε and pair recovery per SAE.

Usage: python bench/hierarchy_tree_toy.py [--epochs E] [--out bench/results/hierarchy_tree_toy.json] [--plot-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mdlsae.data import hierarchy_recovery, make_toy, mmcs
from mdlsae.measure.forest import discover_parents
from mdlsae.measure.kernels import select_quantize
from mdlsae.models.sae import SAE, SAEConfig
from mdlsae.models.train import TrainConfig, train
from mdlsae.models.train.objectives import tree_from
from mdlsae.selection.select import evaluate_sae
from toydata import cooccurrence_parents

SPEC = dict(d=64, n_features=224, mean_active=3, n_parents=32, children=2, child_rate=0.7, levels=2)
BRANCHING = [2, 2]
TOL = 0.10  # FVU


def oracle(toy, k: int) -> SAE:
    """A tree SAE at the planted directions and forest (the toy's feature order is the regular
    forest's: roots, then each level grouped by parent)."""
    f = torch.from_numpy(toy.features)
    cfg = SAEConfig("tree", d_in=f.shape[1], d_sae=f.shape[0], k=k, parents=toy.parents)
    return SAE.from_weights(cfg, {"W_enc": f.T.contiguous(), "b_enc": torch.zeros(len(f)), "W_dec": f.clone(),
                                  "b_dec": torch.zeros(f.shape[1])}, where="the oracle")


def as_topk(sae: SAE, k: int) -> SAE:
    """A saved (JumpReLU-form) SAE's encoder and dictionary as a TopK SAE, thresholds dropped."""
    w = {n: p.detach().clone() for n, p in sae.named_parameters() if n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    return SAE.from_weights(SAEConfig("topk", d_in=sae.d_in, d_sae=sae.d_sae, k=k), w, where="the Matryoshka SAE")


def strict_part(forest, min_share: float = 0.9) -> np.ndarray:
    """The discovered forest's edges along which the child fires with its parent in at least
    ``min_share`` of its rows; the others' children become roots. (The discovered forest is one
    tree over all latents here: every co-occurrence gains a few bits, but a strict tree must
    silence a child without its parent.)"""
    p = forest.parents.copy()
    kids = np.flatnonzero(p >= 0)
    p[kids[forest.both[kids] < min_share * forest.active[kids]]] = -1
    return p


def measure(name: str, sae: SAE, held, x_held: np.ndarray, seconds: float) -> dict:
    g, c = (evaluate_sae(x_held, sae, TOL, "fvu", per_feature=pf, parents=None if sae.cfg.parents is not None
                         else "auto") for pf in (False, True))
    gd = g.to_dict()
    # a tree's own forest, or the flat SAE's found again at its step (Candidate keeps only its summary)
    parents = sae.cfg.parents if sae.cfg.parents is not None else discover_parents(x_held, sae, g.step).parents
    with torch.no_grad():
        active = (sae.encode(torch.from_numpy(x_held)) > 0).numpy()
    return {"sae": name, "k": sae.cfg.k, "mmcs": mmcs(sae.W_dec.detach().numpy(), held.features), "l0": gd["l0"], "unquantized_fvu": gd["unquantized_loss"],
            "meets_tolerance": gd["meets_tolerance"], "dl_global_step": gd["dl_bits_per_row"],
            "flat_dl_global_step": gd.get("flat_dl_bits_per_row"),
            "dl_per_feature_steps": c.to_dict()["dl_bits_per_row"], "train_seconds": seconds,
            "recovery_0.9": hierarchy_recovery(sae, active, held, parents=parents),
            "recovery_0.7": hierarchy_recovery(sae, active, held, min_cosine=0.7, parents=parents)}


def plot(res: dict, path: Path) -> None:
    """DL at ε (per-feature steps; misses marked) and planted pairs recovered, one bar per SAE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    short = {" + discovered forest": " + forest", ", from the planted directions and forest": "",
             " + strict forest": " + strict", " + co-occurrence forest": " + co-occurrence"}
    names = []
    for r in rows:
        name = r["sae"]
        for long, brief in short.items():
            name = name.replace(long, brief)
        names.append(name)
    palette = {"topk": "tab:blue", "batchtopk": "tab:cyan", "matryoshka": "tab:green", "batchtree": "tab:red",
               "ORACLE": "tab:gray"}
    color = [palette.get(r["sae"].split()[0], "tab:orange") for r in rows]
    y = np.arange(len(rows))[::-1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 0.32 * len(rows) + 1.5), sharey=True)
    a1.barh(y, [r["dl_per_feature_steps"] if r["meets_tolerance"] else 0 for r in rows], color=color)
    for yi, r in zip(y, rows):
        if not r["meets_tolerance"]:
            a1.text(0.5, yi, "misses ε", va="center", fontsize=7, color="tab:red")
    if res["best_flat"]:
        best = next(r["dl_per_feature_steps"] for r in rows if r["sae"] == res["best_flat"])
        a1.axvline(best, color="k", lw=0.8)
        a1.axvline(0.95 * best, color="k", lw=0.8, ls="--")
    a1.set_yticks(y, names, fontsize=7)
    a1.set_xlabel("DL at ε, per-feature steps (bits/row); line: best TopK + forest, dashed: 5 % below", fontsize=8)
    a2.barh(y + 0.2, [r["recovery_0.9"]["pairs_recovered"] for r in rows], 0.4, color=color, label="pairs at cos 0.9")
    a2.barh(y - 0.2, [r["recovery_0.9"].get("pairs_in_forest", 0) for r in rows], 0.4, color=color, alpha=0.45,
            label="... and in place in the forest")
    a2.axvline(0.9, color="k", lw=0.8, ls="--")
    a2.set_xlim(0, 1)
    a2.set_xlabel("planted parent–child pairs recovered (dashed: 90 %)", fontsize=8)
    a2.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"planted strict forest, d={res['spec']['d']}, D={res['spec']['n_features']}, ε: FVU ≤ "
                 f"{res['tolerance_fvu']} on {res['held_out_rows']:,} held-out rows", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=float, default=None, help="default: the trainer's (1.5 M rows seen)")
    ap.add_argument("--flat-k", type=int, nargs="+", default=[8, 10, 12, 16])
    ap.add_argument("--tree-k", type=int, nargs="+", default=[4, 6, 8], help="tree: roots kept per row")
    ap.add_argument("--batchtree-k", type=int, nargs="+", default=[6, 8, 10], help="batchtree: latents per row")
    ap.add_argument("--out", default="bench/results/hierarchy_tree_toy.json")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from the JSON already in --out")
    a = ap.parse_args()
    if a.plot_only:
        plot(json.loads(Path(a.out).read_text()), Path(a.out).with_suffix(".png"))
        return
    torch.set_num_threads(1)
    toy = make_toy(n_rows=80_000, seed=1, **SPEC)
    x_tr, x_held = toy.x[:60_000], toy.x[60_000:]
    held = dataclasses.replace(toy, x=x_held, coeffs=toy.coeffs[60_000:])
    rows, flat = [], {}

    def run(cfg, init=None):
        t = time.perf_counter()
        res = train(x_tr, cfg, init=init)
        return res.sae, time.perf_counter() - t

    def add(r):
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if not k.startswith("recovery")}),
              "pairs", r["recovery_0.9"]["pairs_recovered"], r["recovery_0.9"].get("pairs_in_forest"), flush=True)

    for arch in ("topk", "batchtopk", "matryoshka"):
        for k in a.flat_k:
            sae, s = run(TrainConfig(architecture=arch, d_sae=224, k=k, epochs=a.epochs, seed=0))
            flat[arch, k] = sae
            add(measure(f"{arch} k{k} + discovered forest", sae, held, x_held, s))
    trees = [("tree", k) for k in a.tree_k] + [("batchtree", k) for k in a.batchtree_k]
    for arch, k in trees:
        sae, s = run(TrainConfig(architecture=arch, d_sae=224, k=k, branching=BRANCHING, epochs=a.epochs, seed=0))
        add(measure(f"{arch} k{k}, from scratch", sae, held, x_held, s))
    ok = [r for r in rows if r["meets_tolerance"] and r["sae"].startswith("topk")]
    best = min(ok, key=lambda r: r["dl_per_feature_steps"]) if ok else None

    def trees_from(start: SAE, label: str, forest: np.ndarray, kind: str) -> None:
        """Trees started from ``start`` and ``forest`` (found on its training codes)."""
        roots = int((forest < 0).sum())
        for arch, k in trees:
            if arch == "batchtree" or k <= roots:  # a batchtree's k is its budget, not its roots
                sae, s = run(TrainConfig(architecture=arch, d_sae=224, k=k, epochs=a.epochs, seed=0),
                             init=tree_from(start, forest, min(k, roots)))
                add(measure(f"{arch} k{k}, from {label} + {kind}", sae, held, x_held, s))

    def strict(start: SAE) -> np.ndarray:
        return strict_part(discover_parents(x_tr, start, 0.05))

    if best is not None:  # from the best flat SAE, then from Matryoshka's (less absorbed) latents as TopK
        top, label = flat["topk", best["k"]], f"topk k{best['k']}"
        trees_from(top, label, strict(top), "strict forest")
        with torch.no_grad():  # each latent under the more frequent one active in most (>= half) of its rows
            codes = select_quantize(top.pre_acts(torch.from_numpy(x_tr)), k=best["k"], step=0.05)
        trees_from(top, label, cooccurrence_parents(codes, 0.5), "co-occurrence forest")
        m = as_topk(flat["matryoshka", best["k"]], best["k"])
        trees_from(m, f"matryoshka k{best['k']}", strict(m), "strict forest")
    for arch, k in trees:
        sae, s = run(TrainConfig(architecture=arch, d_sae=224, k=k, epochs=a.epochs, seed=0),
                     init=oracle(toy, min(k, 32)))
        add(measure(f"ORACLE {arch} k{k}, from the planted directions and forest", sae, held, x_held, s))
    for r in rows:
        r["dl_vs_best_flat"] = None if best is None else r["dl_per_feature_steps"] / best["dl_per_feature_steps"] - 1
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": platform.processor()
                                       or platform.machine(), "spec": SPEC, "branching": BRANCHING,
                                       "tolerance_fvu": TOL, "epochs": a.epochs, "train_rows": len(x_tr),
                                       "held_out_rows": len(x_held), "best_flat": best and best["sae"],
                                       "rows": rows}, indent=1) + "\n")
    plot(json.loads(Path(a.out).read_text()), Path(a.out).with_suffix(".png"))


if __name__ == "__main__":
    main()
