"""MNIST as an activation dataset (the write-up's own experiment, seed 002 §6): the original
idx files (gzipped or not) read into float32 rows of 784 pixels scaled to [0, 1]. The path is
always an argument; nothing here knows where a copy lives. Headers are validated so that a
truncated or foreign file is a clear error, not a reshaped mess."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import MdlsaeError, expect

SPLITS = {"train": "train", "test": "t10k"}
IMAGE_SHAPE = (28, 28)


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise MdlsaeError(f"{path}: cannot read ({e})") from None
    header = 4 + 4 * ndim
    expect(len(data) >= header, f"{path}: too short for an idx header")
    got_magic = int.from_bytes(data[:4], "big")
    expect(got_magic == magic, f"{path}: idx magic {got_magic:#x}, expected {magic:#x}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expect(len(data) - header == int(np.prod(dims)),
           f"{path}: header says {dims} but holds {len(data) - header} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise MdlsaeError(f"{directory}: no {stem}[.gz] (expected the four original MNIST idx files)")


def load_mnist(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 784] in [0, 1], labels uint8 [N]) of ``split`` ("train" or "test")."""
    directory = Path(directory)
    expect(directory.is_dir(), f"MNIST directory {str(directory)!r} does not exist")
    expect(split in SPLITS, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    prefix = SPLITS[split]
    images = _read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"), 0x803, 3)
    labels = _read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"), 0x801, 1)
    expect(images.shape[1:] == IMAGE_SHAPE, f"MNIST images must be 28x28, got {images.shape[1:]}")
    expect(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels")
    return (images.reshape(len(images), -1).astype(np.float32) / 255.0), labels.copy()
