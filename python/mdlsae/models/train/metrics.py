"""Statistics of a trained SAE over activations: FVU, L0, dead and dense fractions."""

from __future__ import annotations

import math

import torch

from ...budget import rows_for
from ...data.acts import as_activations


@torch.no_grad()
def evaluate(sae, acts, batch_rows: int | None = None) -> dict:
    """FVU, mean L0, fraction of latents that never fire (dead) and that fire on more than
    10 % of rows (dense), over ``acts``; batches sized by the memory budget by default."""
    acts = as_activations(acts)
    batch_rows = batch_rows or rows_for(sae.row_bytes() + 8 * sae.d_sae)  # + dense latents and masks
    sse = s2 = 0.0
    s1 = torch.zeros(acts.d, dtype=torch.float64)
    counts = torch.zeros(sae.d_sae, dtype=torch.float64)
    for x in acts.batches(batch_rows):
        z = sae.encode(x)
        sse += float((sae.decode(z) - x).double().pow(2).sum())
        s1 += x.double().sum(0)
        s2 += float(x.double().pow(2).sum())
        counts += (z > 0).sum(0).double()
    n = acts.n_rows
    var = s2 - float((s1 ** 2).sum()) / n
    rate = counts / n
    return {"fvu": sse / var if var > 0 else math.inf, "l0": float(counts.sum()) / n,
            "dead_frac": float((rate == 0).double().mean()), "dense_frac": float((rate > 0.1).double().mean()),
            "eval_rows": n}
