"""The built-in demonstration: SAEs compared at the same error tolerance ε, in bits.

Toy activations with known ground truth (d=64, 128 true feature directions, ~3 active per row)
and TopK SAEs trained on them, narrower and wider than the truth, each wider one sparser (the
usual L0-chasing sweep). Every SAE is measured on held-out rows at its *effective precision*:
the coarsest quantization whose reconstruction keeps the fraction of variance unexplained
(FVU) within ε (:mod:`mdlsae.selection`), with one global step and with per-feature steps.
At equal ε, L0 alone rewards the wider, sparser SAEs, while the description length (DL) has
its minimum at the true width. The chosen SAE's held-out codes are then written to a real
``.mdl`` file, whose payload is compared with the DL estimate.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from ..codec.api import encode
from ..data.toy import make_toy
from ..models.sae import SAE, SAEConfig
from ..selection.select import Candidate, select_sae
from ..models.train import TrainConfig, train_sae

TRUE_WIDTH = 128
# (width, k): too narrow, then narrower → wider, each sparser than the one before
CANDIDATES = ((64, 12), (96, 6), (128, 4), (256, 3), (512, 3))


def true_dictionary_sae(features, k: int) -> SAE:
    """TopK SAE whose decoder is the true dictionary (encoder its transpose, to be trained)."""
    f = torch.from_numpy(features)
    sae = SAE(SAEConfig("topk", d_in=f.shape[1], d_sae=f.shape[0], k=k))
    with torch.no_grad():
        sae.W_dec.copy_(f)
        sae.W_enc.copy_(f.T)
    return sae


def _row(c: Candidate, mark: str) -> str:
    a = c.allocation
    global_dl = a.global_point.dl_bits_per_row if a is not None else c.dl_bits_per_row
    line = f"{mark}{c.name:<15} {c.report.d_sae:>5} {c.sae_cfg['k']:>3} {c.report.l0:>6.2f} {c.loss:>7.4f} "
    if not c.meets:  # no step reaches ε: its bits would not be comparable
        return line + f"{'no':>4} {'-':>7} {'-':>9} {'-':>9}"
    return line + f"{'yes':>4} {c.precision.step:>7.3f} {global_dl:>9.2f} {c.dl_bits_per_row:>9.2f}"


def run_demo(n_train: int = 30_000, n_eval: int = 20_000, tolerance: float = 0.15, epochs: float = 15,
             candidates=CANDIDATES, seed: int = 0, progress: bool = True, out=print) -> dict:
    """Train the candidates, compare them at FVU ≤ ``tolerance``, encode the chosen one's
    held-out codes. Returns the selection, the L0 and DL choices and the file's sizes."""
    t0 = time.perf_counter()
    toy = make_toy(n_rows=n_train + n_eval, d=64, n_features=TRUE_WIDTH, mean_active=3, seed=seed)
    train, held_out = toy.x[:n_train], toy.x[n_train:]
    out(f"toy data: d=64, {TRUE_WIDTH} true features, ~3 active per row; {n_train:,} training rows, "
        f"{n_eval:,} held-out rows")
    out(f"training {len(candidates)} TopK SAEs (narrower to wider, each wider one sparser) ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are tiny: one thread is fastest, and immune to a busy machine
    try:
        saes = [(f"topk D={d} k={k}", train_sae(train, TrainConfig(d_sae=d, k=k, epochs=epochs, seed=seed), progress))
                for d, k in candidates]
        sel = select_sae(held_out, saes, tolerance, "fvu", per_feature=True)
    finally:
        torch.set_num_threads(threads)
    ok = [c for c in sel.candidates if c.meets]
    by_dl, by_l0 = sel.chosen, min(ok, key=lambda c: c.report.l0, default=None)

    out(f"\nEvery SAE at the same tolerance: FVU <= {tolerance:g} on the held-out rows, at its effective "
        f"precision\n(step: the coarsest global step meeting it; DL per-feature: one step per feature, same FVU)")
    head = (f" {'SAE':<15} {'D':>5} {'k':>3} {'L0':>6} {'FVU':>7} {'ok':>4} {'step':>7} {'DL global':>9} "
            f"{'DL per-f.':>9}")
    out(head + f"\n {'':<15} {'':>5} {'':>3} {'at ε':>6} {'at ε':>7} {'':>4} {'':>7} {'bits/row':>9} {'bits/row':>9}\n"
        + "-" * len(head))
    for c in sel.candidates:
        out(_row(c, "*" if c is by_dl else " "))
    res = {"selection": sel, "by_dl": by_dl, "by_l0": by_l0, "file": None}
    if by_dl is None:
        out(f"no SAE meets FVU <= {tolerance:g}")
        return res
    out(f"\nL0 alone picks  {by_l0.name:<16} (L0 {by_l0.report.l0:.2f}, {by_l0.dl_bits_per_row:.2f} bits/row): "
        f"the wider, sparser SAE")
    out(f"the DL picks    {by_dl.name:<16} (L0 {by_dl.report.l0:.2f}, {by_dl.dl_bits_per_row:.2f} bits/row): "
        f"the true width is {TRUE_WIDTH}")
    if by_l0 is not by_dl:
        extra = by_l0.dl_bits_per_row / by_dl.dl_bits_per_row - 1
        out(f"-> at the same error, the sparser SAE needs {100 * extra:.0f} % more bits for the same rows: naming each "
            f"active latent\n   among {by_l0.report.d_sae} features costs more"
            + (f", and it needs a finer step ({by_l0.precision.step:.3f} vs {by_dl.precision.step:.3f}) to stay "
               f"within ε" if by_l0.precision.step < by_dl.precision.step else "") + ".")

    sae = dict(saes)[by_dl.name]
    with tempfile.TemporaryDirectory(prefix="mdlsae-demo-") as tmp:
        info = encode(held_out, sae, os.path.join(tmp, "held_out.mdl"), by_dl.step)
    n = info.n_rows
    out(f"\nreal file: the {n:,} held-out rows encoded with {by_dl.name} at its per-feature steps")
    out(f"  DL estimate {info.estimate_bits / n:.3f} bits/row, payload {info.payload_bits / n:.3f} bits/row "
        f"({100 * info.overhead:+.3f} %)")
    out(f"  whole file {8 * info.file_bytes / n:.2f} bits/row (header + index: {info.model_bits:,} bits); naive "
        f"L0*(B+log2 D) {info.naive_bits / n:.1f}, raw float16 {16 * sae.d_in} bits/row")
    out(f"({time.perf_counter() - t0:.0f} s)")
    res["file"] = info
    return res
