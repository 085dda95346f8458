"""Must-show 2 of issue #4: extract all-MiniLM-L6-v2 activations over ~200 KB of English text
(default: the built-in standard-library docstrings, cut to 200 KB), train a TopK SAE (D=1536,
k=32) with default settings on the first 90 % of the tokens and report FVU on the training rows
and on the held-out last 10 %, with the throughput of extraction and training.
Needs the lm extra. Run: ``python bench/train_minilm.py [--text FILE] [--threads 1]``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdlsae.data.extract import builtin_corpus, extract
from mdlsae.models.train import TrainConfig, evaluate, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--text", help="UTF-8 text file (default: 200 KB of stdlib docstrings)")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--d-sae", type=int, default=1536)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = Path(args.text).read_text(encoding="utf-8") if args.text else builtin_corpus(200_000)[:200_000]
    with tempfile.TemporaryDirectory() as tmp:
        ex = extract(text, Path(tmp) / "acts.npy", layer=args.layer)
        print(f"extract: {len(text.encode()):,} bytes -> {ex.n_tokens:,} tokens x {ex.d} (layer {args.layer} resid) "
              f"in {ex.seconds:.1f} s = {ex.tokens_per_s:,.0f} tokens/s")
        acts = np.load(ex.path)
    cut = int(0.9 * len(acts))
    res = train(acts[:cut], TrainConfig(d_sae=args.d_sae, k=args.k))
    s = res.stats
    held = evaluate(res.sae, acts[cut:])
    print(f"train: topk D={args.d_sae} k={args.k} on {cut:,} tokens, {s['steps']} steps ({s['epochs']:.1f} epochs) "
          f"in {s['seconds']:.1f} s = {s['rows_per_s']:,.0f} tokens/s")
    print(f"FVU train {s['fvu']:.4f}  held-out {held['fvu']:.4f}  L0 {s['l0']:.1f}  dead {s['dead_frac']:.3f}  "
          f"dense {s['dense_frac']:.3f}")


if __name__ == "__main__":
    main()
