"""SAE training in torch (CPU or CUDA) for ``topk``, ``batchtopk``, ``matryoshka``, ``jumprelu``,
``relu``, ``tree`` and ``batchtree``.

``k`` is the L0: exact per row for TopK, the batch mean for BatchTopK, Matryoshka and batchtree
(inference uses a threshold calibrated at the end, so the first two save as ``jumprelu``, the
last as a ``tree`` without k), a target for JumpReLU and ReLU, whose penalties adapt to reach
it, and for ``tree`` the roots kept per row. Given the seed, a run is
deterministic on CPU, and a checkpoint (written periodically and on Ctrl-C) resumes to the
same weights as an uninterrupted run.

Rooms: ``config`` (hyper-parameters), ``stream`` (data order in bounded memory),
``objectives/`` (one module per architecture), ``trainer`` (the shared loop), ``checkpoint``,
``metrics``. Imports the data layer and :mod:`mdlsae.models.sae`.
"""

from __future__ import annotations

import os
import time

from ...errors import expect
from ..sae import SAE
from . import checkpoint as _checkpoint
from .config import ARCHITECTURES, TrainConfig, TrainResult, default_k, default_lr
from .metrics import evaluate
from .objectives import batchtopk_threshold
from .stream import BatchStream
from .trainer import Trainer, geometric_median


def train(acts, cfg: TrainConfig, progress: bool = False, init: SAE | None = None,
          checkpoint: str | os.PathLike | None = None, resume: bool = False,
          checkpoint_every_s: float = 300.0) -> TrainResult:
    """Train an SAE on ``acts`` (anything :class:`~mdlsae.data.acts.Activations` accepts), from
    ``init`` when given. With ``checkpoint``, progress is saved there every ``checkpoint_every_s``
    seconds and on Ctrl-C; ``resume`` continues from it (it must come from the same data and
    settings)."""
    t0 = time.perf_counter()
    trainer = Trainer(acts, cfg, init, progress)
    if resume:
        expect(checkpoint is not None, "resume needs a checkpoint path")
        _checkpoint.load(trainer, checkpoint)
    start = trainer.step
    t1 = time.perf_counter()
    trainer.run(checkpoint_path=checkpoint, checkpoint_every_s=checkpoint_every_s)
    t2 = time.perf_counter()
    result = trainer.finish()
    result.stats.update(seconds=time.perf_counter() - t0,
                        rows_per_s=(trainer.step - start) * trainer.stream.batch_size / max(t2 - t1, 1e-9))
    return result


def train_sae(acts, cfg: TrainConfig, progress: bool = False, init: SAE | None = None) -> SAE:
    """:func:`train` returning only the SAE."""
    return train(acts, cfg, progress=progress, init=init).sae


__all__ = ["ARCHITECTURES", "BatchStream", "TrainConfig", "TrainResult", "Trainer", "batchtopk_threshold",
           "default_k", "default_lr", "evaluate", "geometric_median", "train", "train_sae"]
