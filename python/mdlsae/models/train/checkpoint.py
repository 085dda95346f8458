"""Checkpoints of a training run: everything that makes a resumed run reach the same weights as
an uninterrupted one (SAE, optimiser, step, dead-latent counters, the objective's own state),
keyed by a fingerprint of the data and settings so that another run's file is refused."""

from __future__ import annotations

import os
from dataclasses import asdict

import torch

from ...errors import MdlsaeError, expect
from ...fileio import atomic_file

VERSION = 2  # 2: the objective's state under one key


def _fingerprint(trainer) -> dict:
    return {"cfg": asdict(trainer.cfg), "n_rows": trainer.acts.n_rows, "d": trainer.acts.d,
            "d_sae": trainer.d_sae, "k": trainer.k, "total_steps": trainer.total_steps}


def save(trainer, path: str | os.PathLike) -> None:
    state = {"version": VERSION, "fingerprint": _fingerprint(trainer), "step": trainer.step,
             "sae": trainer.sae.state_dict(), "opt": trainer.opt.state_dict(),
             "since_fired": trainer.since_fired, "objective": trainer.objective.state_dict(),
             "ema": trainer.ema}
    with atomic_file(path) as f:
        torch.save(state, f)


def load(trainer, path: str | os.PathLike) -> None:
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
    except FileNotFoundError:
        raise MdlsaeError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as e:
        raise MdlsaeError(f"{path}: not a readable mdlsae checkpoint ({e})") from None
    expect(isinstance(state, dict) and state.get("version") == VERSION,
           f"{path}: not an mdlsae checkpoint of version {VERSION}")
    mine = _fingerprint(trainer)
    diff = sorted(k for k in mine if state["fingerprint"].get(k) != mine[k])
    expect(not diff, f"{path} was written by a different run (differs in {', '.join(diff)}); "
                     "use the same data and settings, or start afresh")
    trainer.sae.load_state_dict(state["sae"])
    trainer.opt.load_state_dict(state["opt"])
    trainer.step, trainer.ema = state["step"], state["ema"]
    trainer.since_fired.copy_(state["since_fired"])
    trainer.objective.load_state_dict(state["objective"])
