"""The built-in demonstration: toy activations with known ground-truth features, a few SAEs
(the true dictionary, trained ones narrower, equal and wider), and their description length
beside L0 and MSE. The point: the true width explains the data in the fewest bits, while L0
alone keeps rewarding wider and sparser dictionaries."""

from __future__ import annotations

import time

import torch

from .measure import DLReport, measure_dl
from .sae import SAE, SAEConfig
from .data import make_toy
from .train import TrainConfig, train_sae


def true_dictionary_sae(features, k: int) -> SAE:
    """TopK SAE whose decoder is the true dictionary (encoder its transpose, to be trained)."""
    f = torch.from_numpy(features)
    sae = SAE(SAEConfig("topk", d_in=f.shape[1], d_sae=f.shape[0], k=k))
    with torch.no_grad():
        sae.W_dec.copy_(f)
        sae.W_enc.copy_(f.T)
    return sae


def run_demo(n_train: int = 30_000, n_eval: int = 20_000, step: float = 0.05, seed: int = 0,
             progress: bool = True, out=print) -> list[tuple[str, DLReport]]:
    t0 = time.perf_counter()
    toy = make_toy(n_rows=n_train + n_eval, d=64, n_features=256, mean_active=4, seed=seed)
    train, held_out = toy.x[:n_train], toy.x[n_train:]
    out(f"toy data: {n_train:,} train + {n_eval:,} held-out rows, d=64, 256 true features, "
        f"~4 active per row; latents quantized with step {step}")
    k = 5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are tiny: one thread is fastest, and immune to a busy machine
    try:
        fixed = TrainConfig(d_sae=256, k=k, epochs=6, seed=seed, train_decoder=False)
        saes = [("true dictionary, k=5", train_sae(train, fixed, progress, init=true_dictionary_sae(toy.features, k)))]
        for d_sae, k in [(64, 5), (256, 5), (1024, 3)]:
            cfg = TrainConfig(d_sae=d_sae, k=k, epochs=20, seed=seed)
            saes.append((f"trained topk D={d_sae} k={k}", train_sae(train, cfg, progress=progress)))
    finally:
        torch.set_num_threads(threads)
    results = []
    header = f"{'SAE':<28} {'D':>5} {'L0':>6} {'MSE':>9} {'FVU':>7} {'DL bits/row':>12} {'naive':>8}"
    out(header)
    out("-" * len(header))
    for name, sae in saes:
        r = measure_dl(held_out, sae, step, sae_name=name)
        results.append((name, r))
        out(f"{name:<28} {r.d_sae:>5} {r.l0:>6.2f} {r.mse:>9.5f} {r.fvu:>7.4f} "
            f"{r.dl_bits_per_row:>12.1f} {r.naive_bits_per_row:>8.1f}")
    out(f"(dense d*B = {results[0][1].dense_bits_per_row:.0f} bits/row, raw float16 = "
        f"{results[0][1].float16_bits_per_row:.0f} bits/row; {time.perf_counter() - t0:.1f} s)")
    return results
