"""The one memory budget every streaming path sizes its batches from (DESIGN §6).

A batch's dense intermediates (an SAE's pre-activations [rows, d_sae], the activation rows,
torch's selection masks) cost bytes per row that grow with the dictionary width; rows per
batch = budget / bytes per row, so peak memory stays flat in the width and in the number of
rows. Codes kept between the two passes of ``encode`` take at most the same budget in memory
and spill to a temporary file beyond it. The default is 256 MiB; set ``MDLSAE_MEMORY`` (e.g.
``2G``, ``768M``, ``1.5GiB`` or plain bytes) or pass ``--memory`` to a command.

>>> parse_bytes("1.5G"), parse_bytes("512MiB"), parse_bytes("33554432")
(1610612736, 536870912, 33554432)
>>> rows_for(bytes_per_row=4 * 65536, budget=512 << 20)
2048
"""

from __future__ import annotations

import os
import re

from .errors import MdlsaeError

ENV = "MDLSAE_MEMORY"
DEFAULT = 256 << 20
MIN = 16 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``300MB`` or plain bytes (units are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if not m:
        raise MdlsaeError(f"memory budget must look like 512M, 2G or a number of bytes, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value < MIN:
        raise MdlsaeError(f"memory budget must be at least {MIN >> 20} MiB, got {text!r}")
    return value


def budget_bytes() -> int:
    """The budget in bytes: ``MDLSAE_MEMORY`` if set, else 256 MiB."""
    text = os.environ.get(ENV)
    return DEFAULT if not text else parse_bytes(text)


def set_budget(text: str) -> None:
    """Make ``text`` (validated) the budget of this process and the processes it starts."""
    parse_bytes(text)
    os.environ[ENV] = text


def rows_for(bytes_per_row: int, budget: int | None = None, at_most: int | None = None) -> int:
    """Rows per batch whose dense intermediates fit ``budget`` (at least 1)."""
    b = budget_bytes() if budget is None else budget
    rows = max(1, b // max(1, int(bytes_per_row)))
    return rows if at_most is None else max(1, min(rows, at_most))
