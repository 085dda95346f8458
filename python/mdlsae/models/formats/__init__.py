"""Readers of the SAEs people have, each folding its library's forward pass exactly into our
:class:`~mdlsae.models.sae.SAE` (or refusing, with what the file is and what mdlsae reads).

``SAE.load`` reads the unambiguous layouts directly (:func:`read_direct`): SAELens directories
of any version (ours among them) and the Gemma Scope, Gemma Scope 2, Llama Scope and Qwen Scope
release files. ``mdlsae import`` (:func:`import_sae`) also reads dictionary_learning and
sparsify SAEs and writes them in the SAELens layout. One module per source library; the
shared folds live in ``common``. The fixture tests compare every reader with the latents its
library computes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import MdlsaeError, expect
from ..sae import CFG_NAME, WEIGHTS_NAME, SAE
from .dictionary_learning import CLASSES as DL_CLASSES, find_ae, read_dictionary_learning
from .saelens import is_saelens, read_saelens
from .scope import find as find_scope, read_scope
from .sparsify import find_sparsify, read_sparsify

FORMATS = ("saelens", "gemma_scope", "gemma_scope_2", "llama_scope", "qwen_scope", "dictionary_learning",
           "sparsify")
IMPORT_ONLY = ("dictionary_learning", "sparsify")


def detect_format(path: Path) -> str:
    """Which layout the SAE at ``path`` has (one of :data:`FORMATS`)."""
    expect(path.exists(), f"SAE path {str(path)!r} does not exist")
    if is_saelens(path):
        return "saelens"
    scope = find_scope(path)
    if scope is not None:
        return scope[0]
    if find_ae(path) is not None:
        return "dictionary_learning"
    if find_sparsify(path) is not None:
        return "sparsify"
    expect(not (path / CFG_NAME).is_file(), f"{path} has {CFG_NAME} but no {WEIGHTS_NAME} (the SAELens layout needs both)")
    what = "a directory" if path.is_dir() else "a file"
    raise MdlsaeError(f"{path} is {what} holding no SAE mdlsae knows: expected a SAELens directory ({CFG_NAME} + "
                      f"{WEIGHTS_NAME}), a Gemma Scope params.npz / params.safetensors, a Llama Scope "
                      "hyperparams.json folder, a Qwen Scope *.sae.pt, a dictionary_learning ae.pt or a "
                      "sparsify hookpoint folder (cfg.json + sae.safetensors)")


def read_direct(path: Path) -> SAE:
    """The SAE at ``path`` if ``SAE.load`` reads its layout directly."""
    fmt = detect_format(path)
    if fmt in IMPORT_ONLY:
        raise MdlsaeError(f"{str(path)!r} looks like a {fmt} SAE; convert it first: mdlsae import {path} -o SAE_DIR")
    return import_sae(path, fmt)


def import_sae(path: str | os.PathLike, fmt: str = "auto", dl_class: str | None = None) -> SAE:
    """Read the SAE at ``path`` written in layout ``fmt`` (one of :data:`FORMATS`, or ``auto``).
    ``dl_class`` names the dictionary_learning class where no config.json says it."""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    expect(fmt in FORMATS, f"format must be auto or one of {', '.join(FORMATS)}, got {fmt!r}")
    expect(dl_class is None or dl_class in DL_CLASSES,
           f"dictionary_learning class must be one of {', '.join(DL_CLASSES)}, got {dl_class!r}")
    if fmt == "saelens":
        expect(is_saelens(path), f"{path}: not a SAELens directory ({CFG_NAME} + {WEIGHTS_NAME})")
        return read_saelens(path)
    if fmt == "dictionary_learning":
        ae = find_ae(path)
        expect(ae is not None, f"{path}: no dictionary_learning ae.pt")
        return read_dictionary_learning(ae, dl_class)
    if fmt == "sparsify":
        found = find_sparsify(path)
        expect(found is not None, f"{path}: no sparsify cfg.json + sae.safetensors")
        return read_sparsify(found)
    scope = find_scope(path)
    expect(scope is not None and scope[0] == fmt, f"{path}: not a {fmt} release file")
    return read_scope(*scope)
