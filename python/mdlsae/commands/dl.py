"""``mdlsae dl``: the description-length estimate of an SAE's quantized codes of a dataset."""

from __future__ import annotations

import json

import numpy as np

from . import (add_acts_argument, add_device_flag, add_distributed_flag, add_dtype_flag, add_memory_flag,
               add_metric_arguments, add_progress_flag, load_sae, metric_from, open_acts, positive_float,
               show_progress)
from ..errors import MdlsaeError
from ..measure.dl import measure_dl
from ..models.sae import SAE


def add_parser(sub) -> None:
    p = sub.add_parser("dl", help="description length of an SAE's codes of an activation file",
                       description="Encode ACTS with the SAE, quantize the latents with STEP and report "
                                   "the DL estimate (DESIGN §2) beside L0, MSE, FVU and reference costs; with "
                                   "--metric ce|kl|embedding, also the model's loss with the quantized "
                                   "reconstruction spliced back in.")
    add_acts_argument(p)
    p.add_argument("--sae", required=True, metavar="SAE_DIR", help="SAE directory in the SAELens layout")
    add_step_arguments(p)
    add_parents_argument(p)
    add_metric_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_device_flag(p)
    add_memory_flag(p)
    add_dtype_flag(p)
    add_distributed_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def add_step_arguments(p, steps_note: str = "e.g. from `mdlsae select --per-feature --steps-out`") -> None:
    """``--step`` or ``--steps``, exactly one; read back with :func:`step_from`."""
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--step", type=positive_float, help="one quantization step for every latent")
    q.add_argument("--steps", metavar="STEPS.npy",
                   help=f"per-feature steps: float32 [d_sae], positive and finite ({steps_note})")


def step_from(args, sae: SAE):
    """The global step, or the per-feature steps checked against ``sae``."""
    return args.step if args.steps is None else load_steps(args.steps, sae.d_sae)


def add_parents_argument(p) -> None:
    p.add_argument("--parents", metavar="PARENTS.npy|auto",
                   help="int64 [d_sae] forest (-1 for roots; children are coded given their parent), or 'auto' "
                        "to discover it on these very rows first (in-sample; `mdlsae parents --fit` measures "
                        "out of sample)")


def resolve_parents(value: str | None, acts, sae: SAE, step, progress: bool) -> tuple[np.ndarray | None, dict | None]:
    """(parents, forest summary): a forest from its file, or discovered on ``acts`` for 'auto'."""
    if value != "auto":
        return load_parents(value), None
    from ..measure.forest import discover_parents

    forest = discover_parents(acts, sae, step, progress=progress)
    return forest.parents, forest.summary()


def own_forest_summary(sae: SAE) -> dict:
    """What the table and JSON say about a tree SAE's own forest."""
    kids = sae.cfg.parents >= 0
    return {"source": "the SAE's own", "edges": int(kids.sum()), "trees": int(len(np.unique(sae.cfg.parents[kids])))}


def load_parents(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MdlsaeError(f"parents file {path!r} does not exist") from None
    except ValueError as e:
        raise MdlsaeError(f"{path}: not a readable .npy file ({e})") from None


def load_steps(path: str, d_sae: int) -> np.ndarray:
    """Per-feature steps from a .npy file, checked against what the file format stores: float32
    [d_sae], every value positive and finite. A 0-d float32 array (what ``mdlsae select
    --steps-out`` saves when one global step wins) is a global step."""
    try:
        steps = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MdlsaeError(f"steps file {path!r} does not exist") from None
    except ValueError as e:
        raise MdlsaeError(f"{path}: not a readable .npy file ({e})") from None
    if steps.dtype != np.float32:
        raise MdlsaeError(f"{path}: steps must be float32 (what a .mdl file stores), got {steps.dtype}; "
                          f"convert with np.save(path, steps.astype(np.float32))")
    if steps.shape not in ((d_sae,), ()):
        raise MdlsaeError(f"{path}: steps must have shape [{d_sae}] (one per SAE feature, d_sae={d_sae}), "
                          f"got shape {list(steps.shape)}")
    bad = np.flatnonzero(~(np.isfinite(steps) & (steps > 0)).reshape(-1))
    if len(bad):
        i = int(bad[0])
        where = f"steps[{i}]" if steps.ndim else "the step"
        raise MdlsaeError(f"{path}: steps must be positive and finite, but {where} = {float(steps.reshape(-1)[i])}"
                          + (f" ({len(bad)} such values)" if len(bad) > 1 else ""))
    return steps if steps.ndim else np.float32(steps)


def run(args) -> int:
    sae = load_sae(args)
    step = step_from(args, sae)
    acts, progress = open_acts(args), show_progress(args)
    parents, forest = resolve_parents(args.parents, acts, sae, step, progress)
    rep = measure_dl(acts, sae, step, parents=parents, progress=progress, sae_name=args.sae)
    if forest is None and parents is None and sae.cfg.parents is not None:
        forest = own_forest_summary(sae)
    if forest is not None:
        rep.extra["forest"] = forest
    metric = metric_from(args, acts, progress)
    if not isinstance(metric, str):  # a downstream loss: the model run with this step's reconstruction
        from ..selection.precision import Evaluator, SparseLatents

        loss = Evaluator(SparseLatents.from_sae(acts, sae, max_rows=metric.n_rows), metric).evaluate(step).loss
        metric.close()
        rep.extra["downstream"] = {"loss": loss, **metric.figures(loss)}
    print(json.dumps(rep.to_dict()) if args.json else rep.table())
    return 0
