"""Issue #18: effective precision against a downstream loss on all-MiniLM-L6-v2 layer 3.

Text: English prose not from the standard library: the Vim user manual shipped with vim
(``/usr/share/vim/vim*/doc/usr_*.txt``, 35 chapters of tutorial prose), with its code examples
(tab-indented lines), headings and rule lines dropped. The first 30 chapter files are the training text,
the later ones the held-out text. Three TopK SAEs (different widths / k) are trained on the
training activations (resid after block 3); on the held-out rows each is measured

1. with ``--metric embedding`` (1 − cos of the mean-pooled sentence embedding with the quantized
   reconstruction spliced back at exactly the real-token positions) at several tolerances, and
   with ``--metric fvu`` at several tolerances: which SAE does MDL choose under each?
2. the time of one step evaluation (Evaluator.evaluate: quantize, reconstruct, one spliced pass
   over the evaluation tokens) against one clean forward of the whole model over the same token
   batches, medians of several runs, side by side.

Run: ``PYTHONPATH=python python bench/downstream_minilm.py [--threads 2] [--out bench/results/downstream_minilm.json]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import re
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from mdlsae.data.extract import extract
from mdlsae.measure.downstream import downstream_loss
from mdlsae.models.sae import SAE
from mdlsae.models.train import TrainConfig, train
from mdlsae.selection.precision import Evaluator, SparseLatents
from mdlsae.selection.select import select_sae

SAES = [(512, 16), (1024, 32), (2048, 16)]
# tolerances every SAE can meet: these multiples of the worst unquantized loss among them
TOLERANCE_FACTORS = [1.25, 1.5, 2.0]


def vim_manual_prose(paths: list[str]) -> str:
    """Paragraphs of running text: no tab-indented examples, headings, rules or tag lines."""
    paras = []
    for p in paths:
        for block in re.split(r"\n\s*\n", Path(p).read_text(encoding="utf-8", errors="replace")):
            lines = [ln.strip() for ln in block.splitlines()
                     if ln.strip() and not ln.startswith(("\t", "    ")) and not re.match(r"^[=\-*]{4,}|^\*\d", ln)
                     and not ln.rstrip().endswith("~")]
            text = re.sub(r"\s+>$", "", " ".join(lines))  # the ">" that announces a dropped example
            if len(text) >= 80 and sum(c.isalpha() or c == " " for c in text) > 0.85 * len(text):
                paras.append(re.sub(r"\|([^|\s]+)\|", r"\1", text))  # |links| -> links
    return "\n\n".join(paras)


def median_time(fn, runs: int) -> tuple[float, list[float]]:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=4096, help="evaluation tokens of the downstream loss")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--epochs", type=float, default=2, help="training epochs of each SAE (small: a shared machine)")
    ap.add_argument("--cache", default="/tmp/downstream_minilm", help="trained SAEs are kept here and reused")
    ap.add_argument("--out", default="bench/results/downstream_minilm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    chapters = sorted(glob.glob("/usr/share/vim/vim*/doc/usr_[0-9]*.txt"))
    assert chapters, "the Vim user manual is not installed (/usr/share/vim/vim*/doc/usr_*.txt)"
    train_text, eval_text = vim_manual_prose(chapters[:30]), vim_manual_prose(chapters[30:])
    res: dict = {"date": date.today().isoformat(),
                 "machine": f"{platform.node()}: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
                            f"{platform.processor() or platform.machine()}",
                 "text": f"Vim user manual prose, {len(chapters)} chapters: train {chapters[0]}..{chapters[29]} "
                         f"({len(train_text):,} chars), held out {chapters[30]}..{chapters[-1]} ({len(eval_text):,} chars)",
                 "layer": args.layer, "site": "resid"}
    tmp = Path(args.cache)
    for name, text in (("train", train_text), ("eval", eval_text)):
        if not (tmp / f"{name}.tokens.npy").is_file():
            ex = extract(text, tmp / f"{name}.npy", args.layer)
            print(f"extract {name}: {ex.n_tokens:,} tokens ({ex.tokens_per_s:,.0f} tok/s)")
    x_train = np.load(tmp / "train.npy")
    x_eval = torch.from_numpy(np.load(tmp / "eval.npy"))
    ids = np.load(tmp / "eval.tokens.npy")
    res["extract"] = {"train_tokens": len(x_train), "eval_tokens": len(x_eval)}
    saes = []
    for d_sae, k in SAES:
        path = Path(args.cache) / f"topk_D{d_sae}_k{k}_e{args.epochs:g}_n{len(x_train)}"
        if not (path / "cfg.json").is_file():
            r = train(x_train, TrainConfig(d_sae=d_sae, k=k, epochs=args.epochs, seed=0), progress=True)
            r.sae.save(path)
            print(f"trained D={d_sae} k={k}: train FVU {r.stats['fvu']:.4f} in {r.stats['seconds']:.0f} s")
        saes.append((f"topk D={d_sae} k={k}", SAE.load(path)))
    t0 = time.perf_counter()
    metric = downstream_loss("embedding", args.layer, min(args.max_tokens, len(x_eval)), tokens=ids)
    setup_s = time.perf_counter() - t0
    res["downstream"] = {"tokens": metric.n_rows, "windows": sum(len(b.input_ids) for b in metric.batches),
                         "setup_s": setup_s, "reference": metric.reference}
    print(f"embedding metric on {metric.n_rows:,} tokens; setup {setup_s:.1f} s; reference {metric.reference}")

    res["unquantized"] = {m_name: {name: Evaluator(SparseLatents.from_sae(x_eval[:metric.n_rows], sae), m)
                                     .unquantized_loss() for name, sae in saes}
                          for m_name, m in (("fvu", "fvu"), ("embedding", metric))}
    print("unquantized losses on the evaluation tokens:", res["unquantized"])

    # 1. MDL selection under the downstream loss and under FVU, at several tolerances
    res["selection"] = {"embedding": {}, "fvu": {}}
    for name, m in (("embedding", metric), ("fvu", "fvu")):
        worst = max(res["unquantized"][name].values())
        for tol in [float(f"{f * worst:.3g}") for f in TOLERANCE_FACTORS]:
            t0 = time.perf_counter()
            sel = select_sae(x_eval, saes, tol, m, max_rows=metric.n_rows)
            out = sel.to_dict()
            out["seconds"] = time.perf_counter() - t0
            res["selection"][name][str(tol)] = out
            print(f"\n{name} <= {tol:g}  ({out['seconds']:.0f} s)\n{sel.table()}")

    # 2. one step evaluation vs one clean forward over the same token batches
    lat = SparseLatents.from_sae(x_eval[:metric.n_rows], saes[1][1])
    evaluator = Evaluator(lat, metric)
    step = np.float32(next(iter(res["selection"]["embedding"].values()))["candidates"][1]["step"])
    model = metric.model

    def clean_forward():
        with torch.inference_mode():
            for b in metric.batches:
                model(input_ids=b.input_ids, attention_mask=b.attention)

    t_clean, ts_clean = median_time(clean_forward, args.runs)
    t_step, ts_step = median_time(lambda: evaluator.evaluate(step), args.runs)
    x_hat = lat.reconstruct(lat.quantize_values(step) * lat.entry_steps(step))
    t_pass, ts_pass = median_time(lambda: metric._evaluate(x_hat), args.runs)
    res["timing"] = {"runs": args.runs, "tokens": metric.n_rows, "sae": saes[1][0], "step": float(step),
                     "clean_forward_s": t_clean, "step_evaluation_s": t_step, "spliced_pass_s": t_pass,
                     "ratio_step_to_clean": t_step / t_clean, "ratio_pass_to_clean": t_pass / t_clean,
                     "all_s": {"clean": ts_clean, "step": ts_step, "pass": ts_pass}}
    print(f"\nclean forward {t_clean:.3f} s, step evaluation {t_step:.3f} s ({t_step / t_clean:.2f}x), "
          f"spliced pass alone {t_pass:.3f} s ({t_pass / t_clean:.2f}x) over {metric.n_rows:,} tokens")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
